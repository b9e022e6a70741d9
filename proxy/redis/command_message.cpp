// The rule engine's view of one Redis command: fields computed once, looked up without allocation.
#include "proxy/redis/command_message.h"

#include <algorithm>
#include <charconv>

namespace faultline::proxy::redis {

namespace {

// A key can be up to 512 MiB; the journal only needs enough of it to recognise it.
constexpr size_t kMaxDescribedKey = 1024;

// N of "arg:N": plain decimal digits, N >= 1.
std::optional<size_t> arg_index(std::string_view digits) {
  if (digits.empty() || digits[0] < '1' || digits[0] > '9') return std::nullopt;
  size_t n = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return n;
}

}  // namespace

CommandMessage::CommandMessage(const std::vector<std::string_view>& args, uint64_t connection)
    : args_(args), connection_(connection) {
  if (!args_.empty()) {
    command_.assign(args_[0]);
    std::transform(command_.begin(), command_.end(), command_.begin(),
                   [](char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; });
  }
  if (args_.size() > 1) key_.emplace(args_[1]);
}

std::optional<std::string> CommandMessage::field(std::string_view name) const {
  if (name == "command") return command_;
  if (name == "key") return key_;
  if (name == "connection") return std::to_string(connection_);
  if (name.rfind("arg:", 0) == 0) {
    const auto n = arg_index(name.substr(4));
    if (!n || *n >= args_.size()) return std::nullopt;
    return std::string(args_[*n]);
  }
  return std::nullopt;
}

const std::string* CommandMessage::field_ref(std::string_view name) const {
  if (name == "command") return &command_;
  if (name == "key") return key_ ? &*key_ : nullptr;
  return nullptr;
}

nlohmann::ordered_json CommandMessage::describe() const {
  nlohmann::ordered_json d;
  d["command"] = command_;
  if (key_ && command_ != "AUTH" && command_ != "HELLO") d["key"] = key_->substr(0, kMaxDescribedKey);
  return d;
}

}  // namespace faultline::proxy::redis
