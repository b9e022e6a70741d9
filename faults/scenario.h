// What a scenario declares, as immutable plain data once loaded (no Lua, no libuv).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "faults/rule.h"

namespace faultline::faults {

enum class Protocol { tcp, http, redis, postgres };
enum class Stream { upstream, downstream };

const char* to_string(Protocol p) noexcept;
const char* to_string(Stream s) noexcept;
std::optional<Protocol> protocol_from(std::string_view s) noexcept;
std::optional<Stream> stream_from(std::string_view s) noexcept;

struct ToxicSpec {
  std::string name;  // defaults to "<type>_<stream>"
  std::string type;  // latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data
  Stream stream = Stream::downstream;
  double toxicity = 1.0;
  std::map<std::string, int64_t> attributes;  // every attribute of the type, defaults filled in
  std::string where;                          // "file:line" of the declaration

  int64_t attr(const std::string& key) const {
    auto it = attributes.find(key);
    return it == attributes.end() ? 0 : it->second;
  }
};

struct ProxySpec {
  std::string name;
  std::string listen;    // host:port as written
  std::string upstream;  // host:port as written
  Protocol protocol = Protocol::tcp;
  std::vector<ToxicSpec> toxics;
  std::vector<RuleSpec> rules;  // in declaration order
  std::string where;
};

struct ExpectSpec {
  enum class Kind { exactly, at_least, at_most };
  enum class Target { rule, toxic };
  std::string name;  // a rule's name, or a toxic's name
  Target target = Target::rule;
  Kind kind = Kind::exactly;
  uint64_t count = 0;
  std::string where;
};

struct Scenario {
  std::string path;
  uint64_t seed = 1;
  bool seed_set = false;  // seed() was called
  std::vector<ProxySpec> proxies;
  std::vector<ExpectSpec> expects;
};

}  // namespace faultline::faults
