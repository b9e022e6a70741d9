// host:port parsing for listen and upstream addresses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace faultline::faults {

struct HostPort {
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
};

// Parses "host:port" or "[v6]:port"; on failure returns nullopt and sets *why.
std::optional<HostPort> parse_host_port(std::string_view text, std::string* why);

}  // namespace faultline::faults
