// host:port parsing: strict, so a typo is caught at load time rather than at connect time.
#include "faults/address.h"

#include <charconv>

namespace faultline::faults {

std::optional<HostPort> parse_host_port(std::string_view text, std::string* why) {
  auto fail = [&](std::string msg) -> std::optional<HostPort> {
    if (why) *why = std::move(msg);
    return std::nullopt;
  };
  if (text.empty()) return fail("empty address (expected host:port)");
  HostPort hp;
  std::string_view port_part;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return fail("missing ']' in IPv6 address");
    hp.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') return fail("missing :port after ']'");
    port_part = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("missing :port (expected host:port)");
    hp.host = std::string(text.substr(0, colon));
    if (hp.host.find(':') != std::string::npos) return fail("IPv6 addresses need brackets, e.g. [::1]:8080");
    port_part = text.substr(colon + 1);
  }
  if (hp.host.empty()) return fail("missing host before ':'");
  for (char c : hp.host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == ':' || c == '_' || c == '%';
    if (!ok) return fail("invalid character in host '" + hp.host + "'");
  }
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_part.data(), port_part.data() + port_part.size(), port);
  if (port_part.empty() || ec != std::errc() || ptr != port_part.data() + port_part.size() || port > 65535)
    return fail("invalid port '" + std::string(port_part) + "' (expected 0-65535)");
  hp.port = static_cast<uint16_t>(port);
  return hp;
}

}  // namespace faultline::faults
