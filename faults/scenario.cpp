// Names of the scenario enums, as users write them.
#include "faults/scenario.h"

namespace faultline::faults {

const char* to_string(Protocol p) noexcept {
  switch (p) {
    case Protocol::tcp:
      return "tcp";
    case Protocol::http:
      return "http";
    case Protocol::redis:
      return "redis";
    case Protocol::postgres:
      return "postgres";
  }
  return "tcp";
}

const char* to_string(Stream s) noexcept { return s == Stream::upstream ? "upstream" : "downstream"; }

std::optional<Protocol> protocol_from(std::string_view s) noexcept {
  if (s == "tcp") return Protocol::tcp;
  if (s == "http") return Protocol::http;
  if (s == "redis") return Protocol::redis;
  if (s == "postgres") return Protocol::postgres;
  return std::nullopt;
}

std::optional<Stream> stream_from(std::string_view s) noexcept {
  if (s == "upstream") return Stream::upstream;
  if (s == "downstream") return Stream::downstream;
  return std::nullopt;
}

}  // namespace faultline::faults
