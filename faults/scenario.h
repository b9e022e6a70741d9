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
  std::optional<double> ttl_s;                // takes effect on no connection accepted this long after start
  std::string where;                          // "file:line" of the declaration

  int64_t attr(const std::string& key) const {
    auto it = attributes.find(key);
    return it == attributes.end() ? 0 : it->second;
  }
};

// TLS termination on a proxy's listener (`tls = { cert = , key = }` or `tls = "auto"`).
struct ListenTls {
  enum class Mode { off, files, auto_cert };
  Mode mode = Mode::off;
  std::string cert;  // PEM files, for Mode::files
  std::string key;
};

struct ProxySpec {
  std::string name;
  std::string listen;    // host:port as written
  std::string upstream;  // host:port (a URL's authority, its port filled in), or "mock"
  Protocol protocol = Protocol::tcp;
  bool upstream_tls = false;  // https:// upstream
  bool tls_verify = true;     // verify the https upstream's certificate (tls_verify = false opts out)
  bool mock = false;          // upstream = "mock": requests no rule answers get the mock defaults
  int64_t upstream_timeout_ms = 60000;  // http: no response head this long after a request → 504 (0 = none)
  ListenTls tls;
  // For mock proxies: the default answers, built by the openai_api prelude at load time.
  std::optional<ActionSpec> mock_completion;  // POST .../chat/completions
  std::optional<ActionSpec> mock_stream;      // the same with "stream": true
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
