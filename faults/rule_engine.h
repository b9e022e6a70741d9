// The rule engine: for each message, which rule fires (matchers → per-key counts → schedule or replay).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "faults/journal.h"
#include "faults/message.h"
#include "faults/replay.h"
#include "faults/rule.h"

namespace faultline::faults {

struct RuleEngineOptions {
  uint64_t seed = 1;
  std::string proxy;             // for the journal
  Journal* journal = nullptr;    // may be null in tests
  ReplaySet* replay = nullptr;   // non-null: replay mode
  ScriptHooks* hooks = nullptr;  // for key/action functions (Lua); may be null when none are used
  size_t max_keys_per_rule = 65536;
  std::function<void(const std::string&)> log_warning;  // script errors, key table full (once per rule)
};

// One per proxy, shared by its worker threads. The rules are the scenario's, immutable; what changes
// (counts per key value, enabled flags, stats) lives here, beside them.
class RuleEngine {
 public:
  // Keeps a reference to `rules`: the scenario outlives the engine.
  RuleEngine(const std::vector<RuleSpec>& rules, RuleEngineOptions options);
  RuleEngine(const RuleEngine&) = delete;
  RuleEngine& operator=(const RuleEngine&) = delete;

  // Key values are kept to this many bytes (longer ones: a prefix and a hash of the whole).
  static constexpr size_t kMaxKeyBytes = 256;
  static std::string bounded_key(std::string_view value);

  struct Fired {
    const RuleSpec* rule;
    ActionSpec action;
    std::string key;       // "" for the rule's shared count
    uint64_t match;        // the match ordinal within the key value
    uint64_t journal_seq;  // 0 without a journal
  };
  // Tries the rules in declaration order on msg; the first that fires decides: it is journaled and
  // returned. conn_id: the process-wide connection number (journal "conn"); now_s: seconds since the
  // scenario started.
  std::optional<Fired> evaluate(const Message& msg, uint64_t conn_id, double now_s);

  struct Stats {
    uint64_t matched = 0;  // matches, across key values, whether or not the rule fired
    uint64_t fired = 0;
  };
  Stats stats(size_t rule_index) const;           // per rule, declaration order; zeros when out of range
  Stats stats(std::string_view rule_name) const;  // zeros for an unknown name
  // For the control API. False when no rule has that name. Enabling a rule with a ttl at `now_s` (seconds
  // since the scenario started) starts its ttl again from then; `ttl_s` gives it one (or another) instead
  // of the scenario's.
  bool set_enabled(std::string_view rule_name, bool enabled, double now_s = -1.0,
                   std::optional<double> ttl_s = std::nullopt);
  // Rules whose ttl is over at now_s and that were not reported yet: each is switched off, journaled
  // ({"proxy":P,"rule":NAME,"expired":true}) and its name returned, once. (evaluate() already skips a rule
  // whose ttl is over; this makes it known when no message comes.)
  std::vector<std::string> expire_due(double now_s);
  bool enabled(std::string_view rule_name) const;  // false for an unknown name

  size_t rule_count() const noexcept { return rules_.size(); }

 private:
  struct KeyCounts {
    uint64_t matches = 0;
    uint64_t fired = 0;
    uint64_t pending = 0;  // fires decided whose action function is still running (see evaluate)
  };
  struct RuleState {
    std::atomic<bool> enabled{true};
    std::atomic<double> expires_s{std::numeric_limits<double>::infinity()};  // ttl: off from then on
    std::atomic<bool> expiry_reported{false};
    KeyCounts shared;  // key value ""
    std::unordered_map<std::string, KeyCounts> keyed;
    bool table_full_logged = false;
    Stats stats;
  };
  // A decision made under the lock, acted on outside it.
  struct Decision {
    bool fires = false;
    uint64_t match = 0;
    std::string key;
  };

  bool conditions_hold(const RuleSpec& rule, const Message& msg) const;
  // The rule's key value for msg; nullopt for the shared count.
  std::optional<std::string> key_value(const RuleSpec& rule, const Message& msg, std::vector<std::string>* warnings);
  Decision count_and_decide(size_t index, std::optional<std::string> key, double now_s,
                            std::vector<std::string>* warnings);
  KeyCounts& counts_for(size_t index, const std::string& key);
  void settle(size_t index, const std::string& key, bool fired);
  uint64_t journal(const RuleSpec& rule, const Message& msg, uint64_t conn_id, const Decision& d,
                   const ActionSpec& action);
  void warn(const std::vector<std::string>& warnings) const;
  const RuleState* state_named(std::string_view rule_name) const;

  const std::vector<RuleSpec>& rules_;
  RuleEngineOptions options_;
  std::vector<std::unique_ptr<RuleState>> states_;  // parallel to rules_
  std::map<std::string, size_t, std::less<>> index_by_name_;
  mutable std::mutex mu_;  // guards every RuleState's counts and stats
};

}  // namespace faultline::faults
