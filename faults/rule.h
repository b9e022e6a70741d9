// A rule as the scenario declared it (immutable after load): matchers, schedule, key, action.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace faultline::faults {

class Message;

// `"s"` exact, `prefix "s"`, `pattern "p"` (a Lua pattern, unanchored unless it says ^ or $),
// `any_of { ... }` (any of the listed matchers).
struct StringMatcher {
  enum class Kind { exact, prefix, pattern, any_of };
  Kind kind = Kind::exact;
  std::string text;
  std::vector<StringMatcher> any;
  bool case_insensitive = false;  // set by the loader for fields compared without case (redis commands);
                                  // applies to exact, prefix, pattern and to every member of an any_of

  bool matches(std::string_view subject) const;
};

// One condition of a rule's `match` table: all of them must hold.
struct Condition {
  std::string field;  // a Message field name (faults/message.h), e.g. "method", "header:x-test-id", "json:stream"
  // For "json:NAME" with a non-string Lua value (true, 3, a table): the JSON value must be equal.
  std::optional<nlohmann::json> json_equals;
  StringMatcher matcher;  // used otherwise; for json fields it matches a string field's text
};

// When a matching message is hit (SPEC §2.2). k is the match ordinal within one key value, 1-based.
struct Schedule {
  enum class Kind { always, first, nth, after, every };
  Kind kind = Kind::always;
  uint64_t n = 0;              // first = N, after = N, every = N
  std::vector<uint64_t> nths;  // nth = N or nth = {2, 5} (the engine also accepts nth = N as n with empty nths)
  std::optional<double> probability;
  std::optional<uint64_t> times;                         // stop after N fires (per key value)
  std::optional<std::pair<double, double>> during;       // seconds since the scenario started, [from, to)

  // Does the schedule (without probability, times, during) select the k-th match?
  bool selects(uint64_t k) const;
};

// What a rule counts per (SPEC §2.2 `key`).
struct KeySpec {
  enum class Kind { shared, connection, field, function };
  Kind kind = Kind::shared;
  std::string field;   // for Kind::field: a Message field name, e.g. "header:x-test-id", "key", "user"
  int function_ref = -1;  // for Kind::function: the Lua function (see ScriptHooks)
};

// An action: what the pipe does with the message (SPEC §2.3).
struct ActionSpec {
  enum class Type {
    pass, delay, hang, drop, reset,               // generic
    respond, truncate, sse_cut, sse_delay, throttle, delay_response,  // http
    redis_error, redis_reply,                     // redis
    postgres_error, postgres_fatal,               // postgres
  };
  Type type = Type::pass;
  int64_t ms = 0;          // delay, hang (0 = forever), sse_delay, delay_response
  int64_t jitter = 0;      // delay
  bool after_forward = false;  // drop { after_forward = true }
  int status = 200;        // respond
  std::vector<std::pair<std::string, std::string>> headers;  // respond, in order
  std::string body;        // respond (json = {...} is encoded into body with content-type set)
  int64_t bytes = 0;       // truncate
  int64_t after_events = 0;      // sse_cut
  int64_t bytes_per_second = 0;  // throttle
  nlohmann::json value;    // redis_reply: null, integer, string, array (nested)
  std::string message;     // redis_error ("PREFIX message"), postgres_error/fatal
  std::string sqlstate;    // postgres_error/fatal
  std::string severity = "ERROR";

  // The journal's "action" name and "detail" object, e.g. "respond", {"status":429}.
  const char* name() const noexcept;
  nlohmann::ordered_json detail() const;
};

struct RuleSpec {
  std::string name;  // unique in the scenario; default "<proxy>-<n>" (n-th rule of the proxy)
  std::vector<Condition> match;
  Schedule schedule;
  KeySpec key;
  std::optional<ActionSpec> action;  // a fixed action
  int action_function_ref = -1;      // or a Lua function(msg, ctx) returning an action or nil
  std::optional<double> ttl_s;       // switches itself off this long after the scenario started (or it was enabled)
  std::string where;                 // "file:line"
};

// Lua-written keys and actions, provided by lua/ (faults/ knows no Lua). Calls are serialised by
// the implementation; errors are reported through *error ("FILE:LINE: message").
class ScriptHooks {
 public:
  virtual ~ScriptHooks() = default;
  // A key function's value for msg: the string, or nullopt for "the rule's shared count".
  virtual std::optional<std::string> key(int function_ref, const Message& msg, std::string* error) = 0;
  struct CallContext {
    const RuleSpec* rule;
    uint64_t count;  // this rule's match ordinal (within the key value)
    uint64_t seed;
    std::string key;
  };
  // An action function's result: an action, or nullopt when it returned nil — then this rule does not
  // fire and the next rule is tried (the message passes if none fires).
  virtual std::optional<ActionSpec> action(int function_ref, const Message& msg, const CallContext& ctx,
                                           std::string* error) = 0;
};

}  // namespace faultline::faults
