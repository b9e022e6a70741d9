// The rule engine on fake messages: matching, per-key counts, schedules, script hooks, journal, replay.
#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "faults/decider.h"
#include "faults/journal.h"
#include "faults/message.h"
#include "faults/replay.h"
#include "faults/rule.h"
#include "faults/rule_engine.h"

using faultline::faults::ActionSpec;
using faultline::faults::Condition;
using faultline::faults::decide;
using faultline::faults::Journal;
using faultline::faults::KeySpec;
using faultline::faults::Message;
using faultline::faults::Protocol;
using faultline::faults::ReplaySet;
using faultline::faults::RuleEngine;
using faultline::faults::RuleEngineOptions;
using faultline::faults::RuleSpec;
using faultline::faults::Schedule;
using faultline::faults::ScriptHooks;
using faultline::faults::StringMatcher;

namespace {

using Fields = std::map<std::string, std::string>;

// A message as a map of fields plus an optional JSON body.
class FakeMessage : public Message {
 public:
  // The body is taken by const reference: moving a disengaged std::optional<json> trips GCC 12's
  // -Wmaybe-uninitialized (a false positive) in optimised sanitizer builds.
  FakeMessage(std::map<std::string, std::string> fields, uint64_t connection = 1,
              const std::optional<nlohmann::json>& body = std::nullopt, Protocol protocol = Protocol::http)
      : fields_(std::move(fields)), connection_(connection), body_(body), protocol_(protocol) {}

  Protocol protocol() const override { return protocol_; }
  uint64_t connection() const override { return connection_; }
  std::optional<std::string> field(std::string_view name) const override {
    if (name == "connection") return std::to_string(connection_);
    auto it = fields_.find(std::string(name));
    if (it == fields_.end()) return std::nullopt;
    return it->second;
  }
  const nlohmann::json* json_field(std::string_view name) const override {
    if (!body_ || !body_->is_object()) return nullptr;
    auto it = body_->find(std::string(name));
    return it == body_->end() ? nullptr : &*it;
  }
  nlohmann::ordered_json describe() const override {
    nlohmann::ordered_json d = nlohmann::ordered_json::object();
    for (const char* k : {"method", "path"})
      if (auto it = fields_.find(k); it != fields_.end()) d[k] = it->second;
    return d;
  }

 private:
  std::map<std::string, std::string> fields_;
  uint64_t connection_;
  std::optional<nlohmann::json> body_;
  Protocol protocol_;
};

FakeMessage get(const std::string& path, uint64_t conn = 1) {
  return FakeMessage(Fields{{"method", "GET"}, {"path", path}}, conn);
}

// Key and action functions as C++ lambdas, by reference number.
class FakeHooks : public ScriptHooks {
 public:
  using KeyFn = std::function<std::optional<std::string>(const Message&, std::string*)>;
  using ActionFn = std::function<std::optional<ActionSpec>(const Message&, const CallContext&, std::string*)>;
  std::map<int, KeyFn> keys;
  std::map<int, ActionFn> actions;
  std::vector<CallContext> calls;  // every action call's context

  std::optional<std::string> key(int ref, const Message& msg, std::string* error) override {
    return keys.at(ref)(msg, error);
  }
  std::optional<ActionSpec> action(int ref, const Message& msg, const CallContext& ctx, std::string* error) override {
    calls.push_back(ctx);
    return actions.at(ref)(msg, ctx, error);
  }
};

StringMatcher exact(std::string text) {
  StringMatcher m;
  m.text = std::move(text);
  return m;
}

Condition cond(std::string field, StringMatcher m) {
  Condition c;
  c.field = std::move(field);
  c.matcher = std::move(m);
  return c;
}

ActionSpec respond(int status) {
  ActionSpec a;
  a.type = ActionSpec::Type::respond;
  a.status = status;
  return a;
}

RuleSpec rule(std::string name, std::vector<Condition> match = {}, Schedule schedule = {},
              std::optional<ActionSpec> action = respond(503)) {
  RuleSpec r;
  r.name = std::move(name);
  r.match = std::move(match);
  r.schedule = std::move(schedule);
  r.action = std::move(action);
  return r;
}

Schedule schedule(Schedule::Kind kind, uint64_t n = 0) {
  Schedule s;
  s.kind = kind;
  s.n = n;
  return s;
}

// "1" for each message that fired, "." for each that did not.
std::string run(RuleEngine& engine, const std::vector<FakeMessage>& msgs, double now_s = 0) {
  std::string out;
  for (const auto& m : msgs) out += engine.evaluate(m, m.connection(), now_s) ? '1' : '.';
  return out;
}

std::string run_n(RuleEngine& engine, int n, const FakeMessage& m, double now_s = 0) {
  return run(engine, std::vector<FakeMessage>(static_cast<size_t>(n), m), now_s);
}

// A journal line without its timestamp, which is the only part that varies between runs.
std::string without_time(const std::string& line) {
  auto j = nlohmann::ordered_json::parse(line);
  j.erase("t_ms");
  return j.dump();
}

}  // namespace

TEST_CASE("conditions on method, path, header and query must all hold") {
  std::vector<RuleSpec> rules = {rule("r", {cond("method", exact("POST")), cond("header:x-test-id", exact("t1")),
                                            cond("query:stream", exact("true"))})};
  RuleEngine engine(rules, {});
  const FakeMessage all(Fields{{"method", "POST"}, {"header:x-test-id", "t1"}, {"query:stream", "true"}});
  const FakeMessage wrong_method(Fields{{"method", "GET"}, {"header:x-test-id", "t1"}, {"query:stream", "true"}});
  const FakeMessage no_header(Fields{{"method", "POST"}, {"query:stream", "true"}});
  CHECK(run(engine, {all, wrong_method, no_header, all}) == "1..1");
  CHECK(engine.stats(size_t{0}).matched == 2);
}

TEST_CASE("a rule without conditions matches every message") {
  std::vector<RuleSpec> rules = {rule("r")};
  RuleEngine engine(rules, {});
  CHECK(run(engine, {get("/a"), FakeMessage(Fields{}, 2)}) == "11");
}

TEST_CASE("a condition on the connection field matches the connection ordinal") {
  std::vector<RuleSpec> rules = {rule("r", {cond("connection", exact("2"))})};
  RuleEngine engine(rules, {});
  CHECK(run(engine, {get("/", 1), get("/", 2), get("/", 3)}) == ".1.");
}

TEST_CASE("a json condition with a string matches the body field's text") {
  StringMatcher model;
  model.kind = StringMatcher::Kind::prefix;
  model.text = "gpt-4";
  std::vector<RuleSpec> rules = {rule("r", {cond("json:model", model)})};
  RuleEngine engine(rules, {});
  const FakeMessage gpt4(Fields{}, 1, nlohmann::json{{"model", "gpt-4o"}});
  const FakeMessage gpt3(Fields{}, 1, nlohmann::json{{"model", "gpt-3.5"}});
  const FakeMessage number(Fields{}, 1, nlohmann::json{{"model", 4}});
  const FakeMessage no_body(Fields{{"model", "gpt-4o"}}, 1);
  CHECK(run(engine, {gpt4, gpt3, number, no_body}) == "1...");
}

TEST_CASE("a json condition with a non-string value compares as JSON") {
  Condition stream;
  stream.field = "json:stream";
  stream.json_equals = true;
  Condition n;
  n.field = "json:n";
  n.json_equals = 2;
  Condition tools;
  tools.field = "json:tools";
  tools.json_equals = nlohmann::json::array({"a", "b"});
  std::vector<RuleSpec> rules = {rule("s", {stream}), rule("n", {n}), rule("t", {tools})};
  RuleEngine engine(rules, {});
  auto fired = [&](nlohmann::json body) -> std::string {
    auto f = engine.evaluate(FakeMessage(Fields{}, 1, std::move(body)), 1, 0);
    return f ? f->rule->name : "-";
  };
  CHECK(fired({{"stream", true}}) == "s");
  CHECK(fired({{"stream", false}}) == "-");
  CHECK(fired({{"stream", "true"}}) == "-");
  CHECK(fired({{"n", 2}}) == "n");
  CHECK(fired({{"n", 2.0}}) == "n");  // equal as JSON numbers
  CHECK(fired({{"n", 3}}) == "-");
  CHECK(fired({{"tools", {"a", "b"}}}) == "t");
  CHECK(fired({{"tools", {"b", "a"}}}) == "-");
  CHECK(fired(nlohmann::json::object()) == "-");
}

TEST_CASE("first N fires on matches 1 to N") {
  std::vector<RuleSpec> rules = {rule("r", {}, schedule(Schedule::Kind::first, 2))};
  RuleEngine engine(rules, {});
  CHECK(run_n(engine, 5, get("/")) == "11...");
  CHECK(engine.stats("r").matched == 5);
  CHECK(engine.stats("r").fired == 2);
}

TEST_CASE("nth N fires on the N-th match only, and a list on each listed one") {
  Schedule single = schedule(Schedule::Kind::nth);
  single.nths = {3};
  Schedule list = schedule(Schedule::Kind::nth);
  list.nths = {2, 5};
  std::vector<RuleSpec> a = {rule("r", {}, single)};
  std::vector<RuleSpec> b = {rule("r", {}, list)};
  RuleEngine ea(a, {});
  RuleEngine eb(b, {});
  CHECK(run_n(ea, 6, get("/")) == "..1...");
  CHECK(run_n(eb, 6, get("/")) == ".1..1.");
}

TEST_CASE("after N fires on every match after the N-th") {
  std::vector<RuleSpec> rules = {rule("r", {}, schedule(Schedule::Kind::after, 2))};
  RuleEngine engine(rules, {});
  CHECK(run_n(engine, 5, get("/")) == "..111");
}

TEST_CASE("every N fires on the N-th, 2N-th, ... match") {
  std::vector<RuleSpec> rules = {rule("r", {}, schedule(Schedule::Kind::every, 3))};
  RuleEngine engine(rules, {});
  CHECK(run_n(engine, 9, get("/")) == "..1..1..1");
}

TEST_CASE("times stops a rule after N fires") {
  Schedule s = schedule(Schedule::Kind::every, 2);
  s.times = 2;
  std::vector<RuleSpec> rules = {rule("r", {}, s)};
  RuleEngine engine(rules, {});
  CHECK(run_n(engine, 8, get("/")) == ".1.1....");
  CHECK(engine.stats("r").fired == 2);
  CHECK(engine.stats("r").matched == 8);
}

TEST_CASE("probability fires exactly where the seeded decision says") {
  Schedule s;
  s.probability = 0.3;
  std::vector<RuleSpec> rules = {rule("flaky", {}, s)};
  RuleEngineOptions options;
  options.seed = 42;
  RuleEngine engine(rules, options);
  std::string want;
  for (uint64_t k = 1; k <= 300; ++k) want += decide(42, "flaky", "", k).uniform01() < 0.3 ? '1' : '.';
  CHECK(run_n(engine, 300, get("/")) == want);
  const auto fired = engine.stats("flaky").fired;
  CHECK(fired > 60);  // about 90 expected
  CHECK(fired < 120);
}

TEST_CASE("during limits firing to a window of scenario time, end excluded") {
  Schedule s;
  s.during = std::make_pair(10.0, 20.0);
  std::vector<RuleSpec> rules = {rule("r", {}, s)};
  RuleEngine engine(rules, {});
  CHECK(run_n(engine, 1, get("/"), 9.99) == ".");
  CHECK(run_n(engine, 1, get("/"), 10.0) == "1");
  CHECK(run_n(engine, 1, get("/"), 19.5) == "1");
  CHECK(run_n(engine, 1, get("/"), 20.0) == ".");
  CHECK(engine.stats("r").matched == 4);
}

TEST_CASE("the first rule that fires decides and later rules are not tried") {
  std::vector<RuleSpec> rules = {rule("first-one", {}, schedule(Schedule::Kind::first, 1), respond(429)),
                                 rule("then-all", {}, {}, respond(500))};
  RuleEngine engine(rules, {});
  auto f1 = engine.evaluate(get("/"), 1, 0);
  REQUIRE(f1);
  CHECK(f1->rule == &rules[0]);
  CHECK(f1->action.status == 429);
  CHECK(engine.stats("then-all").matched == 0);  // not reached, so not counted

  auto f2 = engine.evaluate(get("/"), 1, 0);
  REQUIRE(f2);
  CHECK(f2->rule == &rules[1]);
  CHECK(f2->action.status == 500);
  CHECK(f2->match == 1);  // the second rule's own first match
  CHECK(engine.stats("first-one").matched == 2);
  CHECK(engine.stats("first-one").fired == 1);
  CHECK(engine.stats("then-all").matched == 1);
  CHECK(engine.stats("then-all").fired == 1);
}

TEST_CASE("without a key every client shares the rule's count") {
  std::vector<RuleSpec> rules = {rule("r", {}, schedule(Schedule::Kind::first, 2))};
  RuleEngine engine(rules, {});
  CHECK(run(engine, {get("/", 1), get("/", 2), get("/", 1), get("/", 2)}) == "11..");
}

TEST_CASE("key connection gives each connection its own count") {
  RuleSpec r = rule("r", {}, schedule(Schedule::Kind::first, 1));
  r.key.kind = KeySpec::Kind::connection;
  std::vector<RuleSpec> rules = {r};
  RuleEngine engine(rules, {});
  CHECK(run(engine, {get("/", 1), get("/", 1), get("/", 2), get("/", 3), get("/", 2)}) == "1.11.");
  auto f = engine.evaluate(get("/", 7), 99, 0);
  REQUIRE(f);
  CHECK(f->key == "7");  // the connection ordinal within the proxy, not the process-wide number
  CHECK(f->match == 1);
}

TEST_CASE("key on a field counts per value and a missing field uses the shared count") {
  RuleSpec r = rule("r", {}, schedule(Schedule::Kind::nth));
  r.schedule.nths = {2};
  r.key.kind = KeySpec::Kind::field;
  r.key.field = "header:x-test-id";
  std::vector<RuleSpec> rules = {r};
  RuleEngine engine(rules, {});
  const FakeMessage a(Fields{{"header:x-test-id", "a"}});
  const FakeMessage b(Fields{{"header:x-test-id", "b"}});
  const FakeMessage none(Fields{});
  // Each value, and the shared count of the messages without one, fires at its own second match.
  CHECK(run(engine, {a, b, none, b, a, none, a, none}) == "...111..");
}

TEST_CASE("key on a field: the missing-field messages fire at their own ordinal") {
  RuleSpec r = rule("r", {}, schedule(Schedule::Kind::nth));
  r.schedule.nths = {2};
  r.key.kind = KeySpec::Kind::field;
  r.key.field = "header:x-test-id";
  std::vector<RuleSpec> rules = {r};
  RuleEngine engine(rules, {});
  const FakeMessage a(Fields{{"header:x-test-id", "a"}});
  const FakeMessage none(Fields{});
  CHECK(run(engine, {none, a, none}) == "..1");
}

TEST_CASE("a key function's value picks the count and nil picks the shared count") {
  FakeHooks hooks;
  hooks.keys[7] = [](const Message& m, std::string*) { return m.field("user"); };
  RuleSpec r = rule("r", {}, schedule(Schedule::Kind::first, 1));
  r.key.kind = KeySpec::Kind::function;
  r.key.function_ref = 7;
  std::vector<RuleSpec> rules = {r};
  RuleEngineOptions options;
  options.hooks = &hooks;
  RuleEngine engine(rules, options);
  const FakeMessage alice(Fields{{"user", "alice"}});
  const FakeMessage bob(Fields{{"user", "bob"}});
  const FakeMessage anon(Fields{});
  CHECK(run(engine, {alice, alice, bob, anon, anon, bob}) == "1.11..");
  auto f = engine.evaluate(FakeMessage(Fields{{"user", "carol"}}), 1, 0);
  REQUIRE(f);
  CHECK(f->key == "carol");
}

TEST_CASE("a key function error is logged and the shared count is used") {
  FakeHooks hooks;
  hooks.keys[1] = [](const Message&, std::string* error) -> std::optional<std::string> {
    *error = "s.lua:12: attempt to index a nil value";
    return std::nullopt;
  };
  RuleSpec r = rule("r", {}, schedule(Schedule::Kind::first, 1));
  r.key.kind = KeySpec::Kind::function;
  r.key.function_ref = 1;
  std::vector<RuleSpec> rules = {r};
  std::vector<std::string> warnings;
  RuleEngineOptions options;
  options.hooks = &hooks;
  options.log_warning = [&](const std::string& w) { warnings.push_back(w); };
  RuleEngine engine(rules, options);
  auto f = engine.evaluate(get("/"), 1, 0);
  REQUIRE(f);
  CHECK(f->key.empty());
  CHECK_FALSE(engine.evaluate(get("/"), 1, 0));  // one shared count: first = 1 is spent
  REQUIRE(warnings.size() == 2);
  CHECK(warnings[0].find("s.lua:12: attempt to index a nil value") != std::string::npos);
}

TEST_CASE("a full key table sends new values to the shared count and warns once") {
  RuleSpec r = rule("r", {}, schedule(Schedule::Kind::first, 1));
  r.key.kind = KeySpec::Kind::field;
  r.key.field = "key";
  std::vector<RuleSpec> rules = {r};
  std::vector<std::string> warnings;
  Journal journal;
  RuleEngineOptions options;
  options.max_keys_per_rule = 2;
  options.journal = &journal;
  options.log_warning = [&](const std::string& w) { warnings.push_back(w); };
  RuleEngine engine(rules, options);
  auto k = [](const char* v) { return FakeMessage(Fields{{"key", v}}); };
  // a and b get tables; c is the shared count's first match (fires), d its second (does not).
  CHECK(run(engine, {k("a"), k("b"), k("c"), k("d"), k("a"), k("e")}) == "111...");
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("'r'") != std::string::npos);
  CHECK(warnings[0].find("2 key values") != std::string::npos);
  const auto lines = journal.since(0);
  REQUIRE(lines.size() == 3);
  CHECK(lines[1].find(R"("key":"b")") != std::string::npos);
  CHECK(lines[2].find(R"("key")") == std::string::npos);  // c counted as the shared count
}

TEST_CASE("long key values are bounded in the table and the journal but stay distinct") {
  RuleSpec r = rule("r", {}, schedule(Schedule::Kind::nth));
  r.schedule.nths = {2};
  r.key.kind = KeySpec::Kind::field;
  r.key.field = "key";
  std::vector<RuleSpec> rules = {r};
  Journal journal;
  RuleEngineOptions options;
  options.journal = &journal;
  RuleEngine engine(rules, options);
  const std::string prefix(100000, 'k');  // values a client chose: 100 KB each, one byte apart at the end
  const FakeMessage a(Fields{{"key", prefix + "a"}});
  const FakeMessage b(Fields{{"key", prefix + "b"}});
  // Each value still has its own count: both fire at their own second match.
  CHECK(run(engine, {a, b, a, b}) == "..11");
  const auto lines = journal.since(0);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].size() < 1000);
  CHECK(lines[0] != lines[1]);
  CHECK(RuleEngine::bounded_key(prefix + "a") == RuleEngine::bounded_key(prefix + "a"));
  CHECK(RuleEngine::bounded_key(prefix + "a").size() <= RuleEngine::kMaxKeyBytes);
}

TEST_CASE("an action function's result is the action, with the rule's count and key in its context") {
  FakeHooks hooks;
  hooks.actions[3] = [](const Message&, const ScriptHooks::CallContext& ctx,
                        std::string*) -> std::optional<ActionSpec> {
    if (ctx.count % 2 == 1) return std::nullopt;  // nil: pass
    ActionSpec a;
    a.type = ActionSpec::Type::delay;
    a.ms = static_cast<int64_t>(ctx.count) * 100;
    return a;
  };
  RuleSpec fn = rule("fn", {}, {}, std::nullopt);
  fn.action_function_ref = 3;
  fn.key.kind = KeySpec::Kind::connection;
  std::vector<RuleSpec> rules = {fn, rule("fallback", {}, {}, respond(500))};
  Journal journal;
  RuleEngineOptions options;
  options.seed = 9;
  options.hooks = &hooks;
  options.journal = &journal;
  RuleEngine engine(rules, options);

  auto f1 = engine.evaluate(get("/", 4), 1, 0);
  REQUIRE(f1);
  CHECK(f1->rule->name == "fallback");  // nil: this rule does not fire, the next one may
  auto f2 = engine.evaluate(get("/", 4), 1, 0);
  REQUIRE(f2);
  CHECK(f2->rule->name == "fn");
  CHECK(f2->action.type == ActionSpec::Type::delay);
  CHECK(f2->action.ms == 200);
  CHECK(f2->match == 2);
  REQUIRE(hooks.calls.size() == 2);
  CHECK(hooks.calls[1].rule == &rules[0]);
  CHECK(hooks.calls[1].count == 2);
  CHECK(hooks.calls[1].seed == 9);
  CHECK(hooks.calls[1].key == "4");
  CHECK(engine.stats("fn").matched == 2);
  CHECK(engine.stats("fn").fired == 1);
  const auto lines = journal.since(0);
  REQUIRE(lines.size() == 2);
  CHECK(lines[1].find(R"("rule":"fn","key":"4","match":2,"action":"delay","detail":{"ms":200,"jitter":0})") !=
        std::string::npos);
}

TEST_CASE("an action function error is logged and the message passes that rule") {
  FakeHooks hooks;
  hooks.actions[1] = [](const Message&, const ScriptHooks::CallContext&, std::string* error) {
    *error = "s.lua:30: boom";
    return std::optional<ActionSpec>(ActionSpec{});
  };
  RuleSpec fn = rule("fn", {}, {}, std::nullopt);
  fn.action_function_ref = 1;
  std::vector<RuleSpec> rules = {fn};
  std::vector<std::string> warnings;
  RuleEngineOptions options;
  options.hooks = &hooks;
  options.log_warning = [&](const std::string& w) { warnings.push_back(w); };
  RuleEngine engine(rules, options);
  CHECK_FALSE(engine.evaluate(get("/"), 1, 0));
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0] == "s.lua:30: boom");
  CHECK(engine.stats("fn").matched == 1);
  CHECK(engine.stats("fn").fired == 0);
}

TEST_CASE("times counts only the fires an action function made") {
  FakeHooks hooks;
  hooks.actions[1] = [](const Message&, const ScriptHooks::CallContext& ctx, std::string*) {
    return ctx.count >= 3 ? std::optional<ActionSpec>(ActionSpec{}) : std::nullopt;
  };
  RuleSpec fn = rule("fn", {}, {}, std::nullopt);
  fn.action_function_ref = 1;
  fn.schedule.times = 2;
  std::vector<RuleSpec> rules = {fn};
  RuleEngineOptions options;
  options.hooks = &hooks;
  RuleEngine engine(rules, options);
  CHECK(run_n(engine, 6, get("/")) == "..11..");
  CHECK(hooks.calls.size() == 4);  // once times is reached the function is not called
}

TEST_CASE("a disabled rule is skipped without counting, and can be enabled again") {
  std::vector<RuleSpec> rules = {rule("a", {}, schedule(Schedule::Kind::first, 1), respond(429)),
                                 rule("b", {}, {}, respond(500))};
  RuleEngine engine(rules, {});
  CHECK(engine.enabled("a"));
  CHECK(engine.set_enabled("a", false));
  CHECK_FALSE(engine.enabled("a"));
  auto f = engine.evaluate(get("/"), 1, 0);
  REQUIRE(f);
  CHECK(f->rule->name == "b");
  CHECK(engine.stats("a").matched == 0);
  CHECK(engine.set_enabled("a", true));
  f = engine.evaluate(get("/"), 1, 0);
  REQUIRE(f);
  CHECK(f->rule->name == "a");
  CHECK(f->match == 1);
  CHECK_FALSE(engine.set_enabled("nope", false));
  CHECK_FALSE(engine.enabled("nope"));
  CHECK(engine.stats("nope").matched == 0);
}

TEST_CASE("a rule with a ttl switches itself off, says so once in the journal, and an enable restarts it") {
  std::vector<RuleSpec> rules = {rule("short", {}, {}, respond(503)), rule("rest", {}, {}, respond(500))};
  rules[0].ttl_s = 0.5;
  Journal journal;
  RuleEngineOptions options;
  options.proxy = "api";
  options.journal = &journal;
  RuleEngine engine(rules, options);
  auto f = engine.evaluate(get("/"), 1, 0.49);
  REQUIRE(f);
  CHECK(f->rule->name == "short");
  CHECK(engine.expire_due(0.49).empty());
  f = engine.evaluate(get("/"), 1, 0.5);  // over, even before anyone noticed
  REQUIRE(f);
  CHECK(f->rule->name == "rest");
  CHECK(engine.expire_due(0.7) == std::vector<std::string>{"short"});
  CHECK(engine.expire_due(0.8).empty());  // once
  CHECK_FALSE(engine.enabled("short"));
  const auto lines = journal.since(0);
  REQUIRE(lines.size() == 3);
  CHECK(lines[2].find(R"("proxy":"api","rule":"short","expired":true)") != std::string::npos);
  // Enabled again at 10 s: on for another 0.5 s.
  CHECK(engine.set_enabled("short", true, 10.0));
  f = engine.evaluate(get("/"), 1, 10.2);
  REQUIRE(f);
  CHECK(f->rule->name == "short");
  CHECK(engine.expire_due(10.3).empty());
  CHECK(engine.expire_due(10.5) == std::vector<std::string>{"short"});
}

TEST_CASE("a fired rule writes the journal line of SPEC section 4, key included only when set") {
  std::vector<RuleSpec> rules = {
      rule("throttle-first-two", {cond("method", exact("POST"))}, schedule(Schedule::Kind::first, 2), respond(429))};
  RuleSpec keyed = rule("per-test", {}, {}, respond(500));
  keyed.key.kind = KeySpec::Kind::field;
  keyed.key.field = "header:x-test-id";
  rules.push_back(keyed);
  Journal journal;
  RuleEngineOptions options;
  options.proxy = "openai";
  options.journal = &journal;
  RuleEngine engine(rules, options);
  const FakeMessage post(Fields{{"method", "POST"}, {"path", "/v1/chat/completions"}, {"header:x-test-id", "t7"}});
  auto f = engine.evaluate(post, 3, 0.0125);
  REQUIRE(f);
  CHECK(f->journal_seq == 1);
  CHECK(f->match == 1);
  CHECK(f->key.empty());
  engine.evaluate(post, 3, 0);
  auto f3 = engine.evaluate(post, 5, 0);
  REQUIRE(f3);
  CHECK(f3->journal_seq == 3);
  const auto lines = journal.since(0);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].rfind(R"({"seq":1,"t_ms":)", 0) == 0);
  CHECK(without_time(lines[0]) ==
        R"({"seq":1,"proxy":"openai","conn":3,"protocol":"http","rule":"throttle-first-two","match":1,)"
        R"("action":"respond","detail":{"status":429},"message":{"method":"POST","path":"/v1/chat/completions"}})");
  CHECK(without_time(lines[2]) ==
        R"({"seq":3,"proxy":"openai","conn":5,"protocol":"http","rule":"per-test","key":"t7","match":1,)"
        R"("action":"respond","detail":{"status":500},"message":{"method":"POST","path":"/v1/chat/completions"}})");
}

TEST_CASE("the journal names the message's protocol") {
  std::vector<RuleSpec> rules = {rule("r")};
  Journal journal;
  RuleEngineOptions options;
  options.journal = &journal;
  RuleEngine engine(rules, options);
  engine.evaluate(FakeMessage(Fields{}, 1, std::nullopt, Protocol::redis), 1, 0);
  REQUIRE(journal.size() == 1);
  CHECK(journal.since(0)[0].find(R"("protocol":"redis")") != std::string::npos);
}

TEST_CASE("a key's fire sequence does not depend on how other keys interleave") {
  Schedule s;
  s.probability = 0.5;
  RuleSpec r = rule("flaky", {}, s);
  r.key.kind = KeySpec::Kind::field;
  r.key.field = "header:x-test-id";
  std::vector<RuleSpec> rules = {r};
  const FakeMessage a(Fields{{"header:x-test-id", "a"}});
  const FakeMessage b(Fields{{"header:x-test-id", "b"}});

  auto sequences = [&](const std::string& order) {
    RuleEngineOptions options;
    options.seed = 5;
    RuleEngine engine(rules, options);
    std::map<char, std::string> seq;
    for (char c : order) seq[c] += engine.evaluate(c == 'a' ? a : b, 1, 0) ? '1' : '.';
    return seq;
  };
  const auto apart = sequences(std::string(40, 'a') + std::string(40, 'b'));
  // A fixed, irregular interleaving with 40 of each.
  std::string mixed;
  for (int i = 0, na = 0, nb = 0; na < 40 || nb < 40; ++i) {
    const bool take_a = nb >= 40 || (na < 40 && (i * 7 % 5) < 2);
    mixed += take_a ? 'a' : 'b';
    (take_a ? na : nb)++;
  }
  const auto interleaved = sequences(mixed);
  CHECK(apart.at('a') == interleaved.at('a'));
  CHECK(apart.at('b') == interleaved.at('b'));
  CHECK(apart.at('a') != apart.at('b'));  // keys do get their own decisions
}

TEST_CASE("different seeds give different fire sequences for a probability rule") {
  Schedule s;
  s.probability = 0.5;
  std::vector<RuleSpec> rules = {rule("flaky", {}, s)};
  auto sequence = [&](uint64_t seed) {
    RuleEngineOptions options;
    options.seed = seed;
    RuleEngine engine(rules, options);
    return run_n(engine, 200, get("/"));
  };
  CHECK(sequence(1) == sequence(1));
  CHECK(sequence(1) != sequence(2));
  CHECK(sequence(2) != sequence(3));
}

TEST_CASE("replaying a probability run's journal fires at exactly the recorded positions") {
  Schedule s;
  s.probability = 0.3;
  RuleSpec r = rule("flaky", {}, s);
  r.key.kind = KeySpec::Kind::connection;
  std::vector<RuleSpec> rules = {r, rule("never", {cond("method", exact("NONE"))})};
  std::vector<FakeMessage> traffic;
  for (int i = 0; i < 120; ++i) traffic.push_back(get("/", static_cast<uint64_t>(1 + i % 3)));

  Journal recorded;
  std::string original;
  {
    RuleEngineOptions options;
    options.seed = 11;
    options.journal = &recorded;
    RuleEngine engine(rules, options);
    original = run(engine, traffic);
  }
  REQUIRE(recorded.size() > 10);
  std::string text;
  for (const auto& line : recorded.since(0)) text += line + "\n";

  std::string error;
  auto replay = ReplaySet::parse(text, "j.jsonl", &error);
  REQUIRE(replay);
  // A different seed and a schedule that would never fire: replay consults neither.
  std::vector<RuleSpec> changed = rules;
  changed[0].schedule.probability = 0.0;
  Journal replayed;
  RuleEngineOptions options;
  options.seed = 999;
  options.replay = &*replay;
  options.journal = &replayed;
  RuleEngine engine(changed, options);
  CHECK(run(engine, traffic) == original);
  CHECK(replay->unmet().empty());
  const auto a = recorded.since(0);
  const auto b = replayed.since(0);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(without_time(a[i]) == without_time(b[i]));
}

TEST_CASE("replaying a journal with a line deleted fires everywhere else, even past times") {
  Schedule s;
  s.times = 1;
  std::vector<RuleSpec> rules = {rule("r", {}, s)};
  std::string error;
  auto replay = ReplaySet::parse(R"({"rule":"r","match":2})"
                                 "\n"
                                 R"({"rule":"r","match":4})"
                                 "\n"
                                 R"({"rule":"r","match":9})"
                                 "\n",
                                 "j", &error);
  REQUIRE(replay);
  RuleEngineOptions options;
  options.replay = &*replay;
  RuleEngine engine(rules, options);
  CHECK(run_n(engine, 5, get("/")) == ".1.1.");
  const auto unmet = replay->unmet();
  REQUIRE(unmet.size() == 1);
  CHECK(unmet[0].find("match 9") != std::string::npos);
}

TEST_CASE("several threads evaluating at once never exceed first or times") {
  Schedule first = schedule(Schedule::Kind::first, 50);
  Schedule times;
  times.times = 30;
  FakeHooks hooks;
  hooks.actions[1] = [](const Message&, const ScriptHooks::CallContext&, std::string*) {
    return std::optional<ActionSpec>(ActionSpec{});
  };
  RuleSpec by_function = rule("times", {cond("path", exact("/t"))}, times, std::nullopt);
  by_function.action_function_ref = 1;
  std::vector<RuleSpec> rules = {rule("first", {cond("path", exact("/f"))}, first), by_function};
  Journal journal;
  RuleEngineOptions options;
  options.journal = &journal;
  options.hooks = &hooks;
  std::mutex hooks_mu;  // FakeHooks records calls; the real hooks serialise themselves
  struct LockedHooks : ScriptHooks {
    FakeHooks* inner;
    std::mutex* mu;
    std::optional<std::string> key(int ref, const Message& m, std::string* e) override {
      std::lock_guard l(*mu);
      return inner->key(ref, m, e);
    }
    std::optional<ActionSpec> action(int ref, const Message& m, const CallContext& c, std::string* e) override {
      std::lock_guard l(*mu);
      return inner->action(ref, m, c, e);
    }
  } locked;
  locked.inner = &hooks;
  locked.mu = &hooks_mu;
  options.hooks = &locked;
  RuleEngine engine(rules, options);
  std::atomic<int> fired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i)
        if (engine.evaluate(get(i % 2 ? "/f" : "/t", static_cast<uint64_t>(t)), 1, 0)) ++fired;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(engine.stats("first").matched == 200);
  CHECK(engine.stats("first").fired == 50);
  CHECK(engine.stats("times").matched == 200);
  CHECK(engine.stats("times").fired == 30);
  CHECK(fired == 80);
  CHECK(journal.size() == 80);
}
