#include "proxy/http/request_message.h"

namespace faultline::proxy::http {

void RequestMessage::set_body(std::string_view body) {
  // Hostile bytes are just "not JSON": no exception, no depth blow-up beyond nlohmann's own iteration.
  nlohmann::json parsed = nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object()) body_ = std::move(parsed);
}

std::optional<std::string> RequestMessage::field(std::string_view name) const {
  if (name == "method") return head_.method;
  if (name == "path") return path_;
  if (name == "host") {
    auto host = head_.host();
    if (!host) return std::nullopt;
    return *host;
  }
  if (name == "connection") return std::to_string(connection_);
  if (name.rfind("header:", 0) == 0) {
    auto value = head_.header(name.substr(7));
    if (!value) return std::nullopt;
    return std::string(*value);
  }
  if (name.rfind("query:", 0) == 0) {
    const std::string_view param = name.substr(6);
    for (auto& [key, value] : head_.query())
      if (key == param) return value;
    return std::nullopt;
  }
  if (name.rfind("json:", 0) == 0) {
    const nlohmann::json* value = json_field(name.substr(5));
    if (!value) return std::nullopt;
    if (value->is_string()) return value->get<std::string>();
    return value->dump();
  }
  return std::nullopt;
}

const std::string* RequestMessage::field_ref(std::string_view name) const {
  if (name == "method") return &head_.method;
  if (name == "path") return &path_;
  if (name.rfind("header:", 0) == 0) {
    const std::string_view wanted = name.substr(7);
    for (const auto& h : head_.headers)
      if (iequals(h.name, wanted)) return &h.value;
  }
  return nullptr;
}

const nlohmann::json* RequestMessage::json_field(std::string_view name) const {
  if (!body_.is_object()) return nullptr;
  auto it = body_.find(name);
  return it == body_.end() ? nullptr : &*it;
}

nlohmann::ordered_json RequestMessage::describe() const {
  nlohmann::ordered_json d;
  d["method"] = head_.method;
  d["path"] = path_;
  return d;
}

}  // namespace faultline::proxy::http
