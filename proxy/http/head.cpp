// Parsed HTTP/1.x heads: lookup, target decomposition and request-head serialisation.
#include "proxy/http/head.h"

#include <algorithm>

namespace faultline::proxy::http {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "scheme://authority/rest": the authority and where the rest begins; nothing for origin-form.
std::optional<std::pair<std::string_view, size_t>> absolute_form(std::string_view target) {
  if (target.empty() || target.front() == '/') return std::nullopt;
  size_t sep = target.find("://");
  if (sep == std::string_view::npos) return std::nullopt;
  size_t start = sep + 3;
  size_t end = target.find_first_of("/?#", start);
  if (end == std::string_view::npos) end = target.size();
  return std::pair{target.substr(start, end - start), end};
}

// A value given by a rule must not be able to smuggle a header or a second request into the head.
void append_sanitized(std::string& out, std::string_view s) {
  for (char c : s) out.push_back((c == '\r' || c == '\n' || c == '\0') ? ' ' : c);
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::optional<std::string_view> find_header(const Headers& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

void set_header(Headers& headers, std::string_view name, std::string_view value) {
  auto first = std::find_if(headers.begin(), headers.end(), [&](const Header& h) { return iequals(h.name, name); });
  if (first == headers.end()) {
    append_header(headers, name, value);
    return;
  }
  first->name = std::string(name);
  first->value = std::string(value);
  auto rest = std::remove_if(first + 1, headers.end(), [&](const Header& h) { return iequals(h.name, name); });
  headers.erase(rest, headers.end());
}

void append_header(Headers& headers, std::string_view name, std::string_view value) {
  headers.push_back(Header{std::string(name), std::string(value)});
}

size_t remove_header(Headers& headers, std::string_view name) {
  return std::erase_if(headers, [&](const Header& h) { return iequals(h.name, name); });
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string RequestHead::path() const {
  std::string_view t = target;
  if (iequals(method, "CONNECT") || t == "*") return std::string(t);
  if (auto abs = absolute_form(t)) {
    t.remove_prefix(abs->second);
    size_t end = t.find_first_of("?#");
    std::string_view p = t.substr(0, end);
    return p.empty() ? std::string("/") : std::string(p);
  }
  return std::string(t.substr(0, t.find_first_of("?#")));
}

std::vector<std::pair<std::string, std::string>> RequestHead::query() const {
  std::vector<std::pair<std::string, std::string>> params;
  std::string_view t = target;
  size_t q = t.find('?');
  if (q == std::string_view::npos) return params;
  t.remove_prefix(q + 1);
  t = t.substr(0, t.find('#'));
  while (!t.empty()) {
    size_t amp = t.find('&');
    std::string_view pair = t.substr(0, amp);
    t.remove_prefix(amp == std::string_view::npos ? t.size() : amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      params.emplace_back(percent_decode(pair), std::string());
    } else {
      params.emplace_back(percent_decode(pair.substr(0, eq)), percent_decode(pair.substr(eq + 1)));
    }
  }
  return params;
}

std::optional<std::string> RequestHead::host() const {
  // RFC 9112 3.2.2: the target's authority, when it has one, wins over the Host header.
  if (iequals(method, "CONNECT")) return target;
  if (auto abs = absolute_form(target)) return std::string(abs->first);
  if (auto h = header("host")) return std::string(*h);
  return std::nullopt;
}

std::string serialize_request_head(const RequestHead& head) { return serialize_forwarded_head(head, {}); }

std::string serialize_forwarded_head(const RequestHead& head, const ForwardEdits& edits) {
  std::string out;
  size_t size = head.method.size() + head.target.size() + edits.host.size() + edits.client.size() + 64;
  for (const auto& h : head.headers) size += h.name.size() + h.value.size() + 4;
  out.reserve(size);
  append_sanitized(out, head.method);
  out.push_back(' ');
  append_sanitized(out, head.target);
  out += " HTTP/";
  out += std::to_string(head.version_major);
  out.push_back('.');
  out += std::to_string(head.version_minor);
  out += "\r\n";
  bool host_done = edits.host.empty();
  bool xff_done = edits.client.empty();
  auto line = [&out](std::string_view name, std::string_view value, std::string_view extra = {}) {
    append_sanitized(out, name);
    out += ": ";
    append_sanitized(out, value);
    if (!extra.empty()) {
      out += ", ";
      append_sanitized(out, extra);
    }
    out += "\r\n";
  };
  // The client goes at the end of the list: after the last X-Forwarded-For line, as repeated lines combine in order.
  const Header* last_xff = nullptr;
  if (!edits.client.empty())
    for (const auto& h : head.headers)
      if (iequals(h.name, "x-forwarded-for")) last_xff = &h;
  for (const auto& h : head.headers) {
    if (!edits.host.empty() && iequals(h.name, "host")) {
      if (!host_done) line(h.name, edits.host);  // the first Host, rewritten; any repeat dropped
      host_done = true;
    } else if (&h == last_xff) {
      line(h.name, h.value, edits.client);
      xff_done = true;
    } else if (edits.drop_expect && iequals(h.name, "expect")) {
      continue;
    } else {
      line(h.name, h.value);
    }
  }
  if (!host_done) line("Host", edits.host);
  if (!xff_done) line("X-Forwarded-For", edits.client);
  out += "\r\n";
  return out;
}

}  // namespace faultline::proxy::http
