// Rule evaluation (SPEC §2.2–§3, §4): what counts as a match, how it is counted, when it fires.
#include "faults/rule_engine.h"

#include <fmt/format.h>

#include <utility>

#include "faults/decider.h"
#include "faults/scenario.h"

namespace faultline::faults {

namespace {
constexpr std::string_view kJsonPrefix = "json:";
}  // namespace

RuleEngine::RuleEngine(const std::vector<RuleSpec>& rules, RuleEngineOptions options)
    : rules_(rules), options_(std::move(options)) {
  states_.reserve(rules_.size());
  for (size_t i = 0; i < rules_.size(); ++i) {
    states_.push_back(std::make_unique<RuleState>());
    if (rules_[i].ttl_s) states_.back()->expires_s.store(*rules_[i].ttl_s);
    index_by_name_.emplace(rules_[i].name, i);  // names are unique; the first wins if not
  }
}

std::optional<RuleEngine::Fired> RuleEngine::evaluate(const Message& msg, uint64_t conn_id, double now_s) {
  std::vector<std::string> warnings;  // logged outside the lock, so a logger may call back in
  for (size_t i = 0; i < rules_.size(); ++i) {
    const RuleSpec& rule = rules_[i];
    if (!states_[i]->enabled.load(std::memory_order_relaxed)) continue;
    // Its ttl is over (under replay, like `during`, not consulted: the journal says where to fire).
    if (!options_.replay && now_s >= states_[i]->expires_s.load(std::memory_order_relaxed)) continue;
    if (!conditions_hold(rule, msg)) continue;
    // Script calls happen outside the lock: a slow Lua function must not stall other workers' counting.
    std::optional<std::string> key = key_value(rule, msg, &warnings);
    const Decision d = count_and_decide(i, std::move(key), now_s, &warnings);
    if (!d.fires) {
      warn(warnings);
      warnings.clear();
      continue;
    }
    std::optional<ActionSpec> action;
    if (rule.action) {
      action = *rule.action;
    } else if (rule.action_function_ref < 0) {
      action = ActionSpec{};  // a rule without an action passes, visibly
    } else if (options_.hooks == nullptr) {
      warnings.push_back("rule '" + rule.name + "': action function without script hooks; the message passes");
    } else {
      std::string error;
      const ScriptHooks::CallContext ctx{&rule, d.match, options_.seed, d.key};
      action = options_.hooks->action(rule.action_function_ref, msg, ctx, &error);
      if (!error.empty()) {
        // The error already says FILE:LINE; the message passes unharmed (SPEC §2.3).
        warnings.push_back(error);
        action.reset();
      }
    }
    settle(i, d.key, action.has_value());
    warn(warnings);
    warnings.clear();
    if (!action) continue;  // nil from the function: this rule does not fire, the next may
    const uint64_t seq = journal(rule, msg, conn_id, d, *action);
    return Fired{&rule, std::move(*action), d.key, d.match, seq};
  }
  return std::nullopt;
}

bool RuleEngine::conditions_hold(const RuleSpec& rule, const Message& msg) const {
  for (const Condition& cond : rule.match) {
    const std::string_view field = cond.field;
    const bool json = field.starts_with(kJsonPrefix);
    if (cond.json_equals) {
      const nlohmann::json* v = msg.json_field(json ? field.substr(kJsonPrefix.size()) : field);
      if (v == nullptr || *v != *cond.json_equals) return false;
    } else if (json) {
      const nlohmann::json* v = msg.json_field(field.substr(kJsonPrefix.size()));
      if (v == nullptr || !v->is_string() || !cond.matcher.matches(v->get_ref<const std::string&>())) return false;
    } else if (const std::string* ref = msg.field_ref(field)) {
      if (!cond.matcher.matches(*ref)) return false;
    } else {
      const std::optional<std::string> text = msg.field(field);
      if (!text || !cond.matcher.matches(*text)) return false;
    }
  }
  return true;
}

std::optional<std::string> RuleEngine::key_value(const RuleSpec& rule, const Message& msg,
                                                 std::vector<std::string>* warnings) {
  switch (rule.key.kind) {
    case KeySpec::Kind::shared:
      return std::nullopt;
    case KeySpec::Kind::connection:
      return std::to_string(msg.connection());
    case KeySpec::Kind::field:
      return msg.field(rule.key.field);
    case KeySpec::Kind::function: {
      if (options_.hooks == nullptr) {
        warnings->push_back("rule '" + rule.name + "': key function without script hooks; using the shared count");
        return std::nullopt;
      }
      std::string error;
      std::optional<std::string> value = options_.hooks->key(rule.key.function_ref, msg, &error);
      if (!error.empty()) {
        warnings->push_back(error);
        return std::nullopt;
      }
      return value;
    }
  }
  return std::nullopt;
}

// A key value longer than kMaxKeyBytes (a header or a Redis key is client-chosen and can be large) is
// kept as its first bytes plus a hash of the whole: the table's memory is bounded, distinct values stay
// distinct, and the same value always gives the same key, so journal and replay agree.
std::string RuleEngine::bounded_key(std::string_view value) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a, 64 bits
  for (const unsigned char c : value) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{}...#{:016x}", value.substr(0, kMaxKeyBytes - 20), h);
}

RuleEngine::Decision RuleEngine::count_and_decide(size_t index, std::optional<std::string> key, double now_s,
                                                  std::vector<std::string>* warnings) {
  const RuleSpec& rule = rules_[index];
  std::lock_guard lock(mu_);
  RuleState& st = *states_[index];
  ++st.stats.matched;

  Decision d;
  KeyCounts* counts = &st.shared;
  if (key && key->size() > kMaxKeyBytes) *key = bounded_key(*key);
  if (key && !key->empty()) {
    auto it = st.keyed.find(*key);
    if (it != st.keyed.end()) {
      counts = &it->second;
      d.key = std::move(*key);
    } else if (st.keyed.size() < options_.max_keys_per_rule) {
      d.key = std::move(*key);
      counts = &st.keyed[d.key];
    } else if (!st.table_full_logged) {
      // Keys come from clients: bound the table. New values share one count, so decisions stay a
      // function of (seed, rule, "", k) and the journal and replay agree on them.
      st.table_full_logged = true;
      warnings->push_back("rule '" + rule.name + "': more than " + std::to_string(options_.max_keys_per_rule) +
                          " key values; new values share the rule's count");
    }
  }
  d.match = ++counts->matches;

  if (options_.replay != nullptr) {
    d.fires = options_.replay->rule_fires(rule.name, d.key, d.match);
  } else {
    const Schedule& s = rule.schedule;
    d.fires = s.selects(d.match) && (!s.during || (s.during->first <= now_s && now_s < s.during->second)) &&
              (!s.times || counts->fired + counts->pending < *s.times) &&
              (!s.probability || decide(options_.seed, rule.name, d.key, d.match).uniform01() < *s.probability);
  }
  // A fire is reserved until the action (perhaps a script) is known, so `times` holds across threads.
  if (d.fires) ++counts->pending;
  return d;
}

RuleEngine::KeyCounts& RuleEngine::counts_for(size_t index, const std::string& key) {
  RuleState& st = *states_[index];
  if (key.empty()) return st.shared;
  return st.keyed[key];  // present: count_and_decide put it there and entries are never removed
}

void RuleEngine::settle(size_t index, const std::string& key, bool fired) {
  std::lock_guard lock(mu_);
  KeyCounts& counts = counts_for(index, key);
  --counts.pending;
  if (!fired) return;
  ++counts.fired;
  ++states_[index]->stats.fired;
}

uint64_t RuleEngine::journal(const RuleSpec& rule, const Message& msg, uint64_t conn_id, const Decision& d,
                             const ActionSpec& action) {
  if (options_.journal == nullptr) return 0;
  Journal::Entry e;
  e["proxy"] = options_.proxy;
  e["conn"] = conn_id;
  e["protocol"] = to_string(msg.protocol());
  e["rule"] = rule.name;
  if (!d.key.empty()) e["key"] = d.key;
  e["match"] = d.match;
  e["action"] = action.name();
  e["detail"] = action.detail();
  e["message"] = msg.describe();
  return options_.journal->record(e);
}

void RuleEngine::warn(const std::vector<std::string>& warnings) const {
  if (!options_.log_warning) return;
  for (const std::string& w : warnings) options_.log_warning(w);
}

const RuleEngine::RuleState* RuleEngine::state_named(std::string_view rule_name) const {
  auto it = index_by_name_.find(rule_name);
  return it == index_by_name_.end() ? nullptr : states_[it->second].get();
}

RuleEngine::Stats RuleEngine::stats(size_t rule_index) const {
  if (rule_index >= states_.size()) return {};
  std::lock_guard lock(mu_);
  return states_[rule_index]->stats;
}

RuleEngine::Stats RuleEngine::stats(std::string_view rule_name) const {
  auto it = index_by_name_.find(rule_name);
  return it == index_by_name_.end() ? Stats{} : stats(it->second);
}

bool RuleEngine::set_enabled(std::string_view rule_name, bool enabled, double now_s, std::optional<double> ttl_s) {
  auto it = index_by_name_.find(rule_name);
  if (it == index_by_name_.end()) return false;
  RuleState& st = *states_[it->second];
  const RuleSpec& rule = rules_[it->second];
  if (!ttl_s) ttl_s = rule.ttl_s;
  if (enabled && now_s >= 0.0) {
    st.expires_s.store(ttl_s ? now_s + *ttl_s : std::numeric_limits<double>::infinity());
    st.expiry_reported.store(false);
  }
  st.enabled.store(enabled, std::memory_order_relaxed);
  return true;
}

std::vector<std::string> RuleEngine::expire_due(double now_s) {
  std::vector<std::string> out;
  if (options_.replay) return out;
  for (size_t i = 0; i < rules_.size(); ++i) {
    RuleState& st = *states_[i];
    if (now_s < st.expires_s.load() || st.expiry_reported.exchange(true)) continue;
    st.enabled.store(false, std::memory_order_relaxed);
    if (options_.journal) {
      Journal::Entry e;
      e["proxy"] = options_.proxy;
      e["rule"] = rules_[i].name;
      e["expired"] = true;
      options_.journal->record(e);
    }
    out.push_back(rules_[i].name);
  }
  return out;
}

bool RuleEngine::enabled(std::string_view rule_name) const {
  const RuleState* st = state_named(rule_name);
  return st != nullptr && st->enabled.load(std::memory_order_relaxed);
}

}  // namespace faultline::faults
