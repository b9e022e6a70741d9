// Rules in scenarios: what p:rule{} becomes, where each mistake is reported, every action and preset, function rules.
#include <catch2/catch.hpp>

#include <chrono>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "faults/decider.h"
#include "faults/message.h"
#include "lua/scenario_loader.h"

using faultline::faults::ActionSpec;
using faultline::faults::Condition;
using faultline::faults::ExpectSpec;
using faultline::faults::KeySpec;
using faultline::faults::Protocol;
using faultline::faults::ProxySpec;
using faultline::faults::RuleSpec;
using faultline::faults::Scenario;
using faultline::faults::Schedule;
using faultline::faults::ScriptHooks;
using faultline::faults::StringMatcher;
using faultline::lua::load_scenario_source;
using faultline::lua::LoadResult;
using Json = nlohmann::json;
using Type = ActionSpec::Type;
using Headers = std::vector<std::pair<std::string, std::string>>;

namespace {

// Lines 1 and 2 declare one proxy of each protocol, so the line under test is always line 3.
const std::string kProxies =
    "local api = proxy { name = 'api', listen = '127.0.0.1:7101', upstream = '127.0.0.1:7102', protocol = 'http' }\n"
    "local cache = proxy { name = 'cache', listen = '127.0.0.1:7103', upstream = '127.0.0.1:7104', protocol = "
    "'redis' } local pg = proxy { name = 'pg', listen = '127.0.0.1:7105', upstream = '127.0.0.1:7106', protocol = "
    "'postgres' } local raw = proxy { name = 'raw', listen = '127.0.0.1:7107', upstream = '127.0.0.1:7108' }\n";

LoadResult load(const std::string& source) { return load_scenario_source(source, "s.lua"); }

Scenario load_ok(const std::string& source) {
  LoadResult result = load(source);
  INFO("error: " << result.error);
  REQUIRE(result.scenario.has_value());
  return *result.scenario;
}

// Line 3 of a scenario with the four proxies: the error starts "s.lua:3: " and holds every word.
void require_line3_error(const std::string& line3, std::initializer_list<std::string> words) {
  LoadResult result = load(kProxies + line3 + "\n");
  INFO("line 3: " << line3 << "\nerror: " << result.error);
  REQUIRE_FALSE(result.scenario.has_value());
  REQUIRE(result.error.rfind("s.lua:3: ", 0) == 0);
  for (const auto& word : words) CHECK(result.error.find(word) != std::string::npos);
}

const ProxySpec& proxy_named(const Scenario& s, const std::string& name) {
  for (const auto& proxy : s.proxies)
    if (proxy.name == name) return proxy;
  FAIL("no proxy " << name);
  throw;
}

// The rules a line 3 declares, on the proxy `proxy`.
std::vector<RuleSpec> rules_of(const std::string& proxy, const std::string& line3) {
  return proxy_named(load_ok(kProxies + line3 + "\n"), proxy).rules;
}

// The action of `proxy:rule { action = EXPR }`.
ActionSpec action_of(const std::string& proxy, const std::string& expr) {
  const auto rules = rules_of(proxy, proxy + ":rule { action = " + expr + " }");
  REQUIRE(rules.size() == 1);
  REQUIRE(rules[0].action.has_value());
  return *rules[0].action;
}

std::string show(const StringMatcher& m) {
  std::string out = m.case_insensitive ? "~" : "";
  switch (m.kind) {
    case StringMatcher::Kind::exact:
      return out + "'" + m.text + "'";
    case StringMatcher::Kind::prefix:
      return out + "prefix '" + m.text + "'";
    case StringMatcher::Kind::pattern:
      return out + "pattern '" + m.text + "'";
    case StringMatcher::Kind::any_of: {
      out += "any_of(";
      for (size_t i = 0; i < m.any.size(); ++i) out += (i == 0 ? "" : ", ") + show(m.any[i]);
      return out + ")";
    }
  }
  return "?";
}

// "field matcher" or "field == json", one per condition, in order.
std::vector<std::string> show(const std::vector<Condition>& conditions) {
  std::vector<std::string> out;
  for (const auto& c : conditions)
    out.push_back(c.field + (c.json_equals ? " == " + c.json_equals->dump() : " " + show(c.matcher)));
  return out;
}

std::optional<std::string> header(const ActionSpec& action, const std::string& name) {
  for (const auto& [key, value] : action.headers)
    if (key == name) return value;
  return std::nullopt;
}

// A protocol message as the engine would hand it to a function rule.
class FakeMessage : public faultline::faults::Message {
 public:
  FakeMessage(Protocol protocol, std::map<std::string, std::string> fields, Json body = nullptr,
              uint64_t connection = 1)
      : protocol_(protocol), fields_(std::move(fields)), body_(std::move(body)), connection_(connection) {}
  Protocol protocol() const override { return protocol_; }
  uint64_t connection() const override { return connection_; }
  std::optional<std::string> field(std::string_view name) const override {
    auto it = fields_.find(std::string(name));
    if (it == fields_.end()) return std::nullopt;
    return it->second;
  }
  const Json* json_field(std::string_view name) const override {
    if (!body_.is_object()) return nullptr;
    auto it = body_.find(std::string(name));
    return it == body_.end() ? nullptr : &*it;
  }
  size_t arg_count() const override {
    size_t n = 0;
    while (fields_.count("arg:" + std::to_string(n + 1)) != 0) ++n;
    return n;
  }
  nlohmann::ordered_json describe() const override { return nlohmann::ordered_json::object(); }

 private:
  Protocol protocol_;
  std::map<std::string, std::string> fields_;
  Json body_;
  uint64_t connection_;
};

}  // namespace

// --- the SPEC's example ---

TEST_CASE("the SPEC's example scenario loads into exactly the expected rules") {
  const Scenario s = load_ok(R"(seed(42)

local openai = proxy {
  name     = "openai",
  listen   = "127.0.0.1:9000",
  upstream = "http://127.0.0.1:8000",
  protocol = "http",
}

openai:rule {
  name   = "throttle-first-two",
  match  = { method = "POST", path = "/v1/chat/completions" },
  first  = 2,
  action = openai_api.rate_limit { retry_after = 0.2 },
}

openai:rule {
  name   = "cut-third-stream",
  match  = { path = prefix "/v1/chat", json = { stream = true } },
  nth    = 3,
  action = http.sse_cut { after_events = 2 },
}

local pg = proxy { name = "pg", listen = "127.0.0.1:6543",
                   upstream = "127.0.0.1:5432", protocol = "postgres" }
pg:rule { name = "lose-commit", match = { query = pattern "^%s*[Cc][Oo][Mm][Mm][Ii][Tt]" },
          nth = 1, action = drop() }
pg:rule { name = "serialize", match = { query = pattern "UPDATE accounts" },
          probability = 0.2, action = postgres.error { sqlstate = "40001",
          message = "could not serialize access due to concurrent update" } }

local cache = proxy { name = "cache", listen = "127.0.0.1:6380",
                      upstream = "127.0.0.1:6379", protocol = "redis" }
cache:rule { match = { command = "GET" }, every = 5,
             action = redis.error "LOADING Redis is loading the dataset in memory" }

pg:toxic { type = "latency", stream = "downstream", latency = 50, jitter = 10 }

expect { rule = "throttle-first-two", fired = 2 }
)");
  REQUIRE(s.proxies.size() == 3);
  CHECK(s.seed == 42);

  const auto& openai = s.proxies[0].rules;
  REQUIRE(openai.size() == 2);
  const RuleSpec& throttle = openai[0];
  CHECK(throttle.name == "throttle-first-two");
  CHECK(throttle.where == "s.lua:10");
  CHECK(show(throttle.match) == std::vector<std::string>{"method 'POST'", "path '/v1/chat/completions'"});
  CHECK(throttle.schedule.kind == Schedule::Kind::first);
  CHECK(throttle.schedule.n == 2);
  CHECK_FALSE(throttle.schedule.probability.has_value());
  CHECK_FALSE(throttle.schedule.times.has_value());
  CHECK_FALSE(throttle.schedule.during.has_value());
  CHECK(throttle.key.kind == KeySpec::Kind::shared);
  CHECK(throttle.action_function_ref == -1);
  REQUIRE(throttle.action.has_value());
  CHECK(throttle.action->type == Type::respond);
  CHECK(throttle.action->status == 429);
  CHECK(header(*throttle.action, "retry-after-ms") == "200");

  const RuleSpec& cut = openai[1];
  CHECK(cut.name == "cut-third-stream");
  CHECK(cut.where == "s.lua:17");
  CHECK(show(cut.match) == std::vector<std::string>{"json:stream == true", "path prefix '/v1/chat'"});
  CHECK(cut.schedule.kind == Schedule::Kind::nth);
  CHECK(cut.schedule.nths == std::vector<uint64_t>{3});
  REQUIRE(cut.action.has_value());
  CHECK(cut.action->type == Type::sse_cut);
  CHECK(cut.action->after_events == 2);

  const auto& pg = s.proxies[1].rules;
  REQUIRE(pg.size() == 2);
  CHECK(pg[0].name == "lose-commit");
  CHECK(pg[0].where == "s.lua:26");
  CHECK(show(pg[0].match) == std::vector<std::string>{"query pattern '^%s*[Cc][Oo][Mm][Mm][Ii][Tt]'"});
  CHECK(pg[0].schedule.kind == Schedule::Kind::nth);
  CHECK(pg[0].schedule.nths == std::vector<uint64_t>{1});
  CHECK(pg[0].action->type == Type::drop);
  CHECK_FALSE(pg[0].action->after_forward);
  CHECK(pg[1].name == "serialize");
  CHECK(show(pg[1].match) == std::vector<std::string>{"query pattern 'UPDATE accounts'"});
  CHECK(pg[1].schedule.kind == Schedule::Kind::always);
  CHECK(pg[1].schedule.probability == 0.2);
  CHECK(pg[1].action->type == Type::postgres_error);
  CHECK(pg[1].action->sqlstate == "40001");
  CHECK(pg[1].action->message == "could not serialize access due to concurrent update");
  CHECK(pg[1].action->severity == "ERROR");
  CHECK(s.proxies[1].toxics.size() == 1);

  const auto& cache = s.proxies[2].rules;
  REQUIRE(cache.size() == 1);
  CHECK(cache[0].name == "cache-1");
  CHECK(show(cache[0].match) == std::vector<std::string>{"command ~'GET'"});
  CHECK(cache[0].schedule.kind == Schedule::Kind::every);
  CHECK(cache[0].schedule.n == 5);
  CHECK(cache[0].action->type == Type::redis_error);
  CHECK(cache[0].action->message == "LOADING Redis is loading the dataset in memory");

  REQUIRE(s.expects.size() == 1);
  CHECK(s.expects[0].name == "throttle-first-two");
  CHECK(s.expects[0].target == ExpectSpec::Target::rule);
  CHECK(s.expects[0].count == 2);
}

TEST_CASE("a scenario without functions keeps no Lua state") {
  LoadResult result = load(kProxies + "api:rule { action = pass() }\n");
  REQUIRE(result.scenario.has_value());
  CHECK(result.hooks == nullptr);
}

// --- matchers, keys, schedules ---

TEST_CASE("match fields of every protocol become conditions on the message's field names") {
  const Scenario s = load_ok(kProxies + R"(
api:rule { match = { method = any_of { 'GET', prefix 'PO' }, path = pattern '^/v1/', host = 'API.example',
                     query = { model = 'gpt' }, header = { ['X-Test-Id'] = prefix 't', accept = 'a/b' },
                     json = { stream = true, model = 'gpt-4o', n = 2, tools = json.null, opts = { a = 1 },
                              list = { 1, 'x' }, m = pattern '^o' },
                     connection = 2 }, action = pass() }
cache:rule { match = { command = any_of { 'get', 'MGET' }, key = prefix 'user:', args = { [2] = 'x', [1] = 'k' } },
             action = pass() }
cache:rule { match = { args = { 'a', prefix 'b' } }, action = pass() }
pg:rule { match = { query = pattern 'UPDATE', message = 'Parse', user = 'alice', database = 'app' }, action = pass() }
raw:rule { match = { connection = any_of { 1, 3 } }, action = pass() }
)");
  CHECK(show(proxy_named(s, "api").rules[0].match) ==
        std::vector<std::string>{"connection '2'", "header:accept 'a/b'", "header:x-test-id prefix 't'",
                                 "host ~'API.example'", "json:list == [1,\"x\"]", "json:m pattern '^o'",
                                 "json:model 'gpt-4o'", "json:n == 2", "json:opts == {\"a\":1}", "json:stream == true",
                                 "json:tools == null", "method any_of('GET', prefix 'PO')", "path pattern '^/v1/'",
                                 "query:model 'gpt'"});
  CHECK(show(proxy_named(s, "cache").rules[0].match) ==
        std::vector<std::string>{"arg:1 'k'", "arg:2 'x'", "command ~any_of(~'get', ~'MGET')", "key prefix 'user:'"});
  CHECK(show(proxy_named(s, "cache").rules[1].match) == std::vector<std::string>{"arg:1 'a'", "arg:2 prefix 'b'"});
  CHECK(show(proxy_named(s, "pg").rules[0].match) ==
        std::vector<std::string>{"database 'app'", "message 'Parse'", "query pattern 'UPDATE'", "user 'alice'"});
  CHECK(show(proxy_named(s, "raw").rules[0].match) == std::vector<std::string>{"connection any_of('1', '3')"});
}

TEST_CASE("keys name what a rule counts per") {
  const Scenario s = load_ok(kProxies +
                             "api:rule { key = 'header:X-Test-Id', action = pass() } api:rule { key = 'connection', "
                             "action = pass() } cache:rule { key = 'key', action = pass() } pg:rule { key = 'user', "
                             "action = pass() } pg:rule { key = 'database', action = pass() } raw:rule { key = "
                             "'connection', action = pass() }\n");
  const auto& api = proxy_named(s, "api").rules;
  CHECK(api[0].key.kind == KeySpec::Kind::field);
  CHECK(api[0].key.field == "header:x-test-id");
  CHECK(api[1].key.kind == KeySpec::Kind::connection);
  CHECK(proxy_named(s, "cache").rules[0].key.field == "key");
  CHECK(proxy_named(s, "pg").rules[0].key.field == "user");
  CHECK(proxy_named(s, "pg").rules[1].key.field == "database");
  CHECK(proxy_named(s, "raw").rules[0].key.kind == KeySpec::Kind::connection);
}

TEST_CASE("schedules: first, nth, after, every, probability, times, during") {
  const auto rules = rules_of("raw",
                              "raw:rule { first = 2, action = pass() } raw:rule { nth = 3, action = pass() } "
                              "raw:rule { nth = { 5, 2, 5 }, action = pass() } raw:rule { after = 4, action = pass() } "
                              "raw:rule { every = 5, probability = 0.5, times = 3, action = pass() } "
                              "raw:rule { during = { to = 10 }, probability = 0, action = pass() } "
                              "raw:rule { during = { from = 1.5 }, probability = 1, action = pass() } "
                              "raw:rule { action = pass() }");
  REQUIRE(rules.size() == 8);
  CHECK(rules[0].schedule.kind == Schedule::Kind::first);
  CHECK(rules[0].schedule.n == 2);
  CHECK(rules[1].schedule.kind == Schedule::Kind::nth);
  CHECK(rules[1].schedule.nths == std::vector<uint64_t>{3});
  CHECK(rules[2].schedule.nths == std::vector<uint64_t>{2, 5});
  CHECK(rules[3].schedule.kind == Schedule::Kind::after);
  CHECK(rules[3].schedule.n == 4);
  CHECK(rules[4].schedule.kind == Schedule::Kind::every);
  CHECK(rules[4].schedule.n == 5);
  CHECK(rules[4].schedule.probability == 0.5);
  CHECK(rules[4].schedule.times == 3u);
  CHECK(rules[5].schedule.kind == Schedule::Kind::always);
  REQUIRE(rules[5].schedule.during.has_value());
  CHECK(rules[5].schedule.during->first == 0.0);
  CHECK(rules[5].schedule.during->second == 10.0);
  CHECK(rules[5].schedule.probability == 0.0);
  CHECK(rules[6].schedule.during->first == 1.5);
  CHECK(std::isinf(rules[6].schedule.during->second));
  CHECK(rules[7].schedule.kind == Schedule::Kind::always);
  CHECK(rules[7].name == "raw-8");
  CHECK(rules[7].where == "s.lua:3");
}

TEST_CASE("matchers print as written") {
  load_ok(
      "assert(tostring(prefix 'a') == 'prefix \"a\"')\n"
      "assert(tostring(any_of { 'x', pattern '^y' }) == 'any_of { \"x\", pattern \"^y\" }')\n"
      "assert(getmetatable(prefix 'a') == 'matcher')\n"
      "assert(tostring(json.null) == 'json.null' and redis.null == json.null)\n"
      "assert(json.encode({ b = 1, a = { json.null, true }, e = json.array {} }) == "
      "'{\"a\":[null,true],\"b\":1,\"e\":[]}')\n");
}

TEST_CASE("rule mistakes are reported at the line of the rule") {
  SECTION("unknown field") {
    require_line3_error("api:rule { frist = 1, action = pass() }", {"rule 'api-1'", "unknown field 'frist'", "first"});
  }
  SECTION("two schedules") {
    require_line3_error("api:rule { first = 1, nth = 2, action = pass() }", {"at most one of", "first, nth"});
  }
  SECTION("first = 0") {
    require_line3_error("api:rule { first = 0, action = pass() }", {"first must be a positive integer, got 0"});
  }
  SECTION("first = 1.5") {
    require_line3_error("api:rule { first = 1.5, action = pass() }", {"'first'", "integer", "1.5"});
  }
  SECTION("after = -1") {
    require_line3_error("api:rule { after = -1, action = pass() }", {"after must be a positive integer"});
  }
  SECTION("every = 'x'") { require_line3_error("api:rule { every = 'x', action = pass() }", {"'every'", "integer"}); }
  SECTION("nth = {}") {
    require_line3_error("api:rule { nth = {}, action = pass() }",
                        {"nth must be a positive integer or a non-empty list"});
  }
  SECTION("nth with a zero") {
    require_line3_error("api:rule { nth = { 2, 0 }, action = pass() }", {"nth: item 2", "got 0"});
  }
  SECTION("nth = 'x'") { require_line3_error("api:rule { nth = 'x', action = pass() }", {"nth must be", "'x'"}); }
  SECTION("probability above 1") {
    require_line3_error("api:rule { probability = 1.5, action = pass() }", {"probability", "between 0 and 1", "1.5"});
  }
  SECTION("probability below 0") {
    require_line3_error("api:rule { probability = -0.1, action = pass() }", {"probability", "-0.1"});
  }
  SECTION("probability not a number") {
    require_line3_error("api:rule { probability = 'often', action = pass() }", {"'probability'", "number"});
  }
  SECTION("times = 0") {
    require_line3_error("api:rule { times = 0, action = pass() }", {"times must be a positive integer"});
  }
  SECTION("during from after to") {
    require_line3_error("api:rule { during = { from = 5, to = 2 }, action = pass() }",
                        {"during", "from (5) must be before to (2)"});
  }
  SECTION("during from below 0") {
    require_line3_error("api:rule { during = { from = -1 }, action = pass() }", {"from must be >= 0"});
  }
  SECTION("during with an unknown field") {
    require_line3_error("api:rule { during = { form = 1 }, action = pass() }", {"unknown field 'form'"});
  }
  SECTION("during not a table") {
    require_line3_error("api:rule { during = 5, action = pass() }", {"during", "expected a table"});
  }
  SECTION("missing action") { require_line3_error("api:rule { name = 'r' }", {"rule 'r': missing field 'action'"}); }
  SECTION("action of the wrong type") {
    require_line3_error("api:rule { action = 'drop' }", {"action must be", "'drop'"});
  }
  SECTION("action constructor not called") {
    require_line3_error("api:rule { action = drop }",
                        {"action = drop names the action without calling it", "drop(...)"});
  }
  SECTION("preset not called") {
    require_line3_error("api:rule { action = openai_api.server_error }", {"openai_api.server_error(...)"});
  }
  SECTION("a matcher is not an action") {
    require_line3_error("api:rule { action = prefix 'x' }", {"action must be", "got matcher"});
  }
  SECTION("duplicate rule name across proxies") {
    require_line3_error("api:rule { name = 'x', action = pass() } cache:rule { name = 'x', action = pass() }",
                        {"rule 'x': duplicate rule name", "s.lua:3"});
  }
  SECTION("a default name that clashes") {
    require_line3_error("api:rule { name = 'api-2', action = pass() } api:rule { action = pass() }",
                        {"rule 'api-2': duplicate rule name", "default name"});
  }
  SECTION("bad rule name") {
    require_line3_error("api:rule { name = 'a b', action = pass() }", {"name 'a b' may only contain"});
  }
  SECTION("rule called with a dot") { require_line3_error("api.rule { action = pass() }", {"p:rule"}); }
  SECTION("a match field of another protocol") {
    require_line3_error("api:rule { match = { command = 'GET' }, action = pass() }",
                        {"match field 'command' is for redis proxies; proxy 'api' is http"});
    require_line3_error("cache:rule { match = { query = 'x' }, action = pass() }",
                        {"match field 'query' is for http and postgres proxies; proxy 'cache' is redis"});
    require_line3_error("raw:rule { match = { path = '/' }, action = pass() }",
                        {"match field 'path' is for http proxies; proxy 'raw' is tcp"});
  }
  SECTION("unknown match field") {
    require_line3_error("api:rule { match = { methd = 'GET' }, action = pass() }",
                        {"unknown match field 'methd'", "method"});
  }
  SECTION("match not a table") {
    require_line3_error("api:rule { match = 'GET', action = pass() }", {"expected a table"});
  }
  SECTION("match value of the wrong type") {
    require_line3_error("api:rule { match = { method = 5 }, action = pass() }",
                        {"match field 'method' must be a string or a matcher", "got 5"});
  }
  SECTION("a header given twice") {
    require_line3_error("api:rule { match = { header = { ['X-A'] = '1', ['x-a'] = '2' } }, action = pass() }",
                        {"header 'x-a' is given twice"});
  }
  SECTION("header not a table") {
    require_line3_error("api:rule { match = { header = 'x' }, action = pass() }",
                        {"match field 'header'", "expected a table"});
  }
  SECTION("a header value of the wrong type") {
    require_line3_error("api:rule { match = { header = { a = true } }, action = pass() }",
                        {"header 'a' must be a string or a matcher"});
  }
  SECTION("args with a name") {
    require_line3_error("cache:rule { match = { args = { a = 'x' } }, action = pass() }",
                        {"argument positions", "'a'"});
  }
  SECTION("json that cannot be JSON") {
    require_line3_error("api:rule { match = { json = { f = print } }, action = pass() }",
                        {"json field 'f'", "function"});
  }
  SECTION("connection 0") {
    require_line3_error("api:rule { match = { connection = 0 }, action = pass() }", {"connection", ">= 1"});
  }
  SECTION("a malformed pattern") {
    require_line3_error("api:rule { match = { path = pattern '[a' }, action = pass() }",
                        {"pattern: malformed pattern '[a'", "missing ']'"});
  }
  SECTION("a pattern ending in %") {
    require_line3_error("local m = pattern 'ab%'", {"pattern: malformed pattern 'ab%'"});
  }
  SECTION("prefix of a number") { require_line3_error("local m = prefix(5)", {"prefix: expected one string", "5"}); }
  SECTION("any_of of nothing") { require_line3_error("local m = any_of {}", {"any_of: the list is empty"}); }
  SECTION("any_of of a boolean") {
    require_line3_error("local m = any_of { 'a', true }", {"any_of: item 2", "boolean"});
  }
  SECTION("key 'header:' without a name") {
    require_line3_error("api:rule { key = 'header:', action = pass() }", {"needs a header name"});
  }
  SECTION("key of another protocol") {
    require_line3_error("api:rule { key = 'user', action = pass() }",
                        {"key 'user' is for postgres proxies; proxy 'api' is http"});
    require_line3_error("pg:rule { key = 'header:x', action = pass() }",
                        {"key 'header:x' is for http proxies; proxy 'pg' is postgres"});
    require_line3_error("raw:rule { key = 'key', action = pass() }",
                        {"key 'key' is for redis proxies; proxy 'raw' is tcp"});
  }
  SECTION("unknown key") {
    require_line3_error("cache:rule { key = 'first', action = pass() }", {"unknown key 'first'", "\"key\""});
  }
  SECTION("key of the wrong type") {
    require_line3_error("api:rule { key = 5, action = pass() }", {"key must be a string or a function"});
  }
  SECTION("an action of another protocol") {
    require_line3_error("cache:rule { action = http.respond(500) }",
                        {"action http.respond is for http proxies; proxy 'cache' is redis"});
    require_line3_error("raw:rule { action = redis.error 'ERR x' }",
                        {"action redis.error is for redis proxies; proxy 'raw' is tcp"});
    require_line3_error("api:rule { action = postgres.fatal() }",
                        {"action postgres.fatal is for postgres proxies; proxy 'api' is http"});
    require_line3_error("pg:rule { action = openai_api.timeout() }", {"is for http proxies; proxy 'pg' is postgres"});
  }
  SECTION("expect naming a rule that does not exist lists the rules") {
    require_line3_error("api:rule { name = 'r1', action = pass() } expect { rule = 'r2', fired = 1 }",
                        {"no rule named 'r2'", "rules: r1"});
  }
}

TEST_CASE("expect may name a rule declared later") {
  const Scenario s = load_ok(
      kProxies + "expect { rule = 'later', fired_at_least = 1 }\napi:rule { name = 'later', action = pass() }\n");
  REQUIRE(s.expects.size() == 1);
  CHECK(s.expects[0].target == ExpectSpec::Target::rule);
}

// --- actions ---

TEST_CASE("generic actions become their ActionSpec") {
  auto a = action_of("raw", "delay(100)");
  CHECK((a.type == Type::delay && a.ms == 100 && a.jitter == 0));
  a = action_of("raw", "delay { ms = 100, jitter = 20 }");
  CHECK((a.type == Type::delay && a.ms == 100 && a.jitter == 20));
  a = action_of("raw", "hang()");
  CHECK((a.type == Type::hang && a.ms == 0));
  a = action_of("raw", "hang { ms = 500 }");
  CHECK((a.type == Type::hang && a.ms == 500));
  a = action_of("raw", "drop()");
  CHECK((a.type == Type::drop && !a.after_forward));
  a = action_of("raw", "drop { after_forward = true }");
  CHECK((a.type == Type::drop && a.after_forward));
  CHECK(action_of("raw", "reset()").type == Type::reset);
  CHECK(action_of("raw", "pass()").type == Type::pass);
  CHECK(action_of("api", "delay(0)").type == Type::delay);  // generic ones work on every protocol
  CHECK(action_of("cache", "reset()").type == Type::reset);
}

TEST_CASE("http actions become their ActionSpec") {
  auto a = action_of("api", "http.respond(503)");
  CHECK((a.type == Type::respond && a.status == 503 && a.headers.empty() && a.body.empty()));
  a = action_of("api", "http.respond(200, { headers = { ['x-b'] = '2', ['X-A'] = 1 }, body = 'hi' })");
  CHECK(a.headers == Headers{{"X-A", "1"}, {"x-b", "2"}});  // a map is sent sorted by name
  CHECK(a.body == "hi");
  a = action_of("api", "http.respond(200, { headers = { { 'x-b', '2' }, { 'x-a', '1' }, { 'x-b', '3' } } })");
  CHECK(a.headers == Headers{{"x-b", "2"}, {"x-a", "1"}, {"x-b", "3"}});  // a list keeps its order
  a = action_of("api",
                "http.respond(400, { json = { error = { code = json.null, n = 1.5, list = { 1, 2 }, e = {} } } })");
  CHECK(a.headers == Headers{{"content-type", "application/json"}});
  CHECK(Json::parse(a.body) == Json::parse(R"({"error":{"code":null,"n":1.5,"list":[1,2],"e":{}}})"));
  a = action_of("api", "http.respond(200, { headers = { ['Content-Type'] = 'application/problem+json' }, json = {} })");
  CHECK(a.headers == Headers{{"Content-Type", "application/problem+json"}});
  CHECK(a.body == "{}");
  a = action_of("api", "http.truncate { bytes = 10 }");
  CHECK((a.type == Type::truncate && a.bytes == 10));
  a = action_of("api", "http.sse_cut { after_events = 2 }");
  CHECK((a.type == Type::sse_cut && a.after_events == 2));
  a = action_of("api", "http.sse_delay { ms = 50 }");
  CHECK((a.type == Type::sse_delay && a.ms == 50));
  a = action_of("api", "http.throttle { bytes_per_second = 1024 }");
  CHECK((a.type == Type::throttle && a.bytes_per_second == 1024));
  a = action_of("api", "http.delay_response(250)");
  CHECK((a.type == Type::delay_response && a.ms == 250));
  a = action_of("api", "http.delay_response { ms = 250 }");
  CHECK((a.type == Type::delay_response && a.ms == 250));
}

TEST_CASE("redis and postgres actions become their ActionSpec") {
  auto a = action_of("cache", "redis.error 'LOADING Redis is loading the dataset in memory'");
  CHECK((a.type == Type::redis_error && a.message == "LOADING Redis is loading the dataset in memory"));
  CHECK(action_of("cache", "redis.reply(nil)").value.is_null());
  CHECK(action_of("cache", "redis.reply()").value.is_null());
  CHECK(action_of("cache", "redis.reply(redis.null)").value.is_null());
  a = action_of("cache", "redis.reply(42)");
  CHECK((a.type == Type::redis_reply && a.value == Json(42)));
  CHECK(action_of("cache", "redis.reply('OK')").value == Json("OK"));
  CHECK(action_of("cache", "redis.reply({ 'a', 1, { 'b', redis.null }, {} })").value ==
        Json::parse(R"(["a", 1, ["b", null], []])"));
  a = action_of("pg", "postgres.error { sqlstate = '40001', message = 'could not serialize', severity = 'ERROR' }");
  CHECK((a.type == Type::postgres_error && a.sqlstate == "40001" && a.message == "could not serialize" &&
         a.severity == "ERROR"));
  a = action_of("pg", "postgres.fatal()");
  CHECK((a.type == Type::postgres_fatal && a.sqlstate == "57P01" && a.severity == "FATAL"));
  CHECK(a.message == "terminating connection due to administrator command");
  a = action_of("pg", "postgres.fatal { sqlstate = '57P02', message = 'crash' }");
  CHECK((a.sqlstate == "57P02" && a.message == "crash"));
}

TEST_CASE("bad action arguments name the action and the argument at the line") {
  require_line3_error("local a = delay(-1)", {"delay: ms must be an integer >= 0", "-1"});
  require_line3_error("local a = delay('x')", {"delay: expected delay(ms)", "'x'"});
  require_line3_error("local a = delay(1.5)", {"delay: ms", "1.5"});
  require_line3_error("local a = delay { ms = 1, jiter = 2 }", {"delay: unknown field 'jiter'", "jitter"});
  require_line3_error("local a = delay { jitter = 2 }", {"delay: missing field 'ms'"});
  require_line3_error("local a = delay { ms = 1, jitter = -2 }", {"delay: jitter must be an integer >= 0"});
  require_line3_error("local a = hang { ms = 0 }", {"hang: ms must be an integer >= 1"});
  require_line3_error("local a = hang(5)", {"hang: expected hang() or hang { ms = N }"});
  require_line3_error("local a = drop { after_forward = 'yes' }", {"drop: after_forward must be true or false"});
  require_line3_error("local a = reset(1)", {"reset: takes no arguments"});
  require_line3_error("local a = pass('x')", {"pass: takes no arguments"});
  require_line3_error("local a = http.respond(99)",
                      {"http.respond: status must be an integer from 100 to 599, got 99"});
  require_line3_error("local a = http.respond('200')", {"http.respond: status"});
  require_line3_error("local a = http.respond(200, 'body')", {"http.respond: the second argument must be a table"});
  require_line3_error("local a = http.respond(200, { body = 'a', json = {} })",
                      {"http.respond: give either body or json"});
  require_line3_error("local a = http.respond(200, { jsn = {} })", {"http.respond: unknown field 'jsn'"});
  require_line3_error("local a = http.respond(200, { body = 5 })", {"http.respond: field 'body' must be a string"});
  require_line3_error("local a = http.respond(200, { headers = { ['bad name'] = 'x' } })",
                      {"http.respond: bad header name 'bad name'"});
  require_line3_error("local a = http.respond(200, { headers = { a = 'x\\r\\nInjected: 1' } })",
                      {"http.respond: header 'a' has a CR, LF or NUL"});
  require_line3_error("local a = http.respond(200, { headers = { { 'a' } } })", {"headers[1] must be a pair"});
  require_line3_error("local a = http.respond(200, { headers = { a = true } })", {"header 'a' must be a string"});
  require_line3_error("local a = http.respond(200, { json = { a = print } })", {"http.respond: json", "function"});
  require_line3_error("local a = http.respond(200, { json = { [1] = 'a', [3] = 'b' } })",
                      {"http.respond: json", "hole"});
  require_line3_error("local a = http.respond(200, { json = { 1, x = 2 } })", {"http.respond: json", "mixes"});
  require_line3_error("local t = {} t.t = t local a = http.respond(200, { json = t })",
                      {"http.respond: json", "nested"});
  require_line3_error("local a = http.respond(200, { json = { n = 0/0 } })", {"http.respond: json", "nan"});
  require_line3_error("local a = http.truncate {}", {"http.truncate: missing field 'bytes'"});
  require_line3_error("local a = http.truncate { bytes = -1 }", {"http.truncate: bytes must be an integer >= 0"});
  require_line3_error("local a = http.sse_cut(3)", {"http.sse_cut: expected a table { after_events = N }", "3"});
  require_line3_error("local a = http.sse_delay { ms = 'x' }", {"http.sse_delay: field 'ms' must be an integer"});
  require_line3_error("local a = http.throttle { bytes_per_second = 0 }",
                      {"http.throttle: bytes_per_second must be an integer >= 1"});
  require_line3_error("local a = http.delay_response()", {"http.delay_response: expected"});
  require_line3_error("local a = redis.error ''", {"redis.error: the message is empty"});
  require_line3_error("local a = redis.error 'ERR a\\r\\nb'", {"redis.error: the message may not contain CR or LF"});
  require_line3_error("local a = redis.error(5)", {"redis.error: expected one string"});
  require_line3_error("local a = redis.reply(1.5)", {"redis.reply: 1.5 is not an integer"});
  require_line3_error("local a = redis.reply(true)", {"redis.reply: a boolean cannot be a reply"});
  require_line3_error("local a = redis.reply({ a = 1 })", {"redis.reply: a list must be a plain sequence"});
  require_line3_error("local a = postgres.error { sqlstate = '4001', message = 'x' }",
                      {"postgres.error: sqlstate must be five characters", "'4001'"});
  require_line3_error("local a = postgres.error { sqlstate = '4000a', message = 'x' }", {"postgres.error: sqlstate"});
  require_line3_error("local a = postgres.error { sqlstate = '40001' }", {"postgres.error: missing field 'message'"});
  require_line3_error("local a = postgres.error { message = 'x' }", {"postgres.error: missing field 'sqlstate'"});
  require_line3_error("local a = postgres.error { sqlstate = '40001', message = 'x', severity = 'FATAL' }",
                      {"postgres.error: severity must be \"ERROR\"", "postgres.fatal"});
  require_line3_error("local a = postgres.fatal { sqlstat = '57P01' }", {"postgres.fatal: unknown field 'sqlstat'"});
}

// --- openai_api ---

namespace {

Json body_of(const ActionSpec& a) {
  INFO("body: " << a.body);
  return Json::parse(a.body);
}

void require_api_error(const ActionSpec& a, int status, const Json& error) {
  CHECK(a.type == Type::respond);
  CHECK(a.status == status);
  CHECK(header(a, "content-type") == "application/json");
  const Json body = body_of(a);
  REQUIRE(body.contains("error"));
  for (const auto& [key, value] : error.items()) CHECK(body["error"][key] == value);
  CHECK(body["error"]["message"].is_string());
  CHECK(body["error"].size() == 4);
}

void require_request_id(const ActionSpec& a) {
  const auto id = header(a, "x-request-id");
  REQUIRE(id.has_value());
  CHECK(id->rfind("req_", 0) == 0);
  CHECK(id->size() == 36);
  CHECK(id->find_first_not_of("0123456789abcdef", 4) == std::string::npos);
}

}  // namespace

TEST_CASE("openai_api.rate_limit sends 429 with the headers the SDKs read") {
  const ActionSpec a = action_of("api", "openai_api.rate_limit { retry_after = 0.2 }");
  require_api_error(a, 429, {{"type", "requests"}, {"param", nullptr}, {"code", "rate_limit_exceeded"}});
  CHECK(header(a, "retry-after") == "1");
  CHECK(header(a, "retry-after-ms") == "200");
  CHECK(header(a, "x-ratelimit-limit-requests") == "500");
  CHECK(header(a, "x-ratelimit-limit-tokens") == "200000");
  CHECK(header(a, "x-ratelimit-remaining-requests") == "0");
  CHECK(header(a, "x-ratelimit-remaining-tokens") == "200000");
  CHECK(header(a, "x-ratelimit-reset-requests") == "200ms");
  CHECK(header(a, "x-ratelimit-reset-tokens") == "0s");
  require_request_id(a);
  CHECK(body_of(a)["error"]["message"].get<std::string>().find("Please try again in 200ms.") != std::string::npos);

  const ActionSpec twenty = action_of("api", "openai_api.rate_limit { retry_after = 20 }");
  CHECK(header(twenty, "retry-after") == "20");
  CHECK(header(twenty, "retry-after-ms") == "20000");
  CHECK(header(twenty, "x-ratelimit-reset-requests") == "20s");
  CHECK(header(action_of("api", "openai_api.rate_limit { retry_after = 90.5 }"), "x-ratelimit-reset-requests") ==
        "1m30.5s");
  CHECK(header(action_of("api", "openai_api.rate_limit()"), "retry-after") == "1");
  CHECK(body_of(action_of("api", "openai_api.rate_limit { message = 'slow down' }"))["error"]["message"] ==
        "slow down");
}

TEST_CASE("openai_api error presets send the API's status and error body") {
  auto a = action_of("api", "openai_api.server_error()");
  require_api_error(a, 500, {{"type", "server_error"}, {"param", nullptr}, {"code", nullptr}});
  require_request_id(a);
  a = action_of("api", "openai_api.overloaded()");
  require_api_error(a, 503,
                    {{"type", "service_unavailable_error"}, {"param", nullptr}, {"code", "server_is_overloaded"}});
  require_request_id(a);
  a = action_of("api", "openai_api.context_length_exceeded()");
  require_api_error(a, 400,
                    {{"type", "invalid_request_error"}, {"param", "messages"}, {"code", "context_length_exceeded"}});
  require_request_id(a);
  a = action_of("api", "openai_api.invalid_api_key()");
  require_api_error(a, 401, {{"type", "invalid_request_error"}, {"param", nullptr}, {"code", "invalid_api_key"}});
  require_request_id(a);
  // These two come from the Cloudflare edge, not from OpenAI: no x-request-id, Cloudflare's body.
  a = action_of("api", "openai_api.bad_gateway()");
  require_api_error(a, 502,
                    {{"type", "cf_bad_gateway"}, {"param", nullptr}, {"code", 502}, {"message", "Bad gateway."}});
  CHECK_FALSE(header(a, "x-request-id").has_value());
  a = action_of("api", "openai_api.timeout()");
  require_api_error(
      a, 524, {{"type", "cf_gateway_timeout"}, {"param", nullptr}, {"code", 524}, {"message", "Gateway timeout."}});
  CHECK_FALSE(header(a, "x-request-id").has_value());
  CHECK(body_of(action_of("api", "openai_api.server_error { message = 'x' }"))["error"]["message"] == "x");
}

TEST_CASE("openai_api request ids are the same on every run and differ between responses") {
  const auto ids = [] {
    const auto rules = rules_of("api",
                                "api:rule { action = openai_api.server_error() } api:rule { action = "
                                "openai_api.server_error() }");
    return std::make_pair(*header(*rules[0].action, "x-request-id"), *header(*rules[1].action, "x-request-id"));
  };
  const auto first = ids();
  CHECK(first == ids());
  CHECK(first.first != first.second);
}

TEST_CASE("openai_api preset mistakes are reported at the caller's line") {
  require_line3_error("local a = openai_api.rate_limit { retry_after = -1 }",
                      {"openai_api.rate_limit: retry_after must be a number of seconds >= 0", "-1"});
  require_line3_error("local a = openai_api.rate_limit { retry = 1 }",
                      {"openai_api.rate_limit: unknown field 'retry'", "retry_after"});
  require_line3_error("local a = openai_api.rate_limit(5)", {"openai_api.rate_limit: expected a table"});
  require_line3_error("local a = openai_api.bad_gateway { x = 1 }", {"openai_api.bad_gateway: unknown field 'x'"});
  require_line3_error("local a = openai_api.completion {}",
                      {"openai_api.completion: content must be a string, got nil"});
  require_line3_error("local a = openai_api.stream { chunks = 'x' }",
                      {"openai_api.stream: chunks must be a list of strings"});
  require_line3_error("local a = openai_api.stream { chunks = { 'a', 2 } }",
                      {"openai_api.stream: chunks[2] must be a string"});
}

TEST_CASE("openai_api.completion is a valid chat.completion") {
  const ActionSpec a = action_of("api", "openai_api.completion { content = 'Hello there' }");
  CHECK(a.status == 200);
  CHECK(header(a, "content-type") == "application/json");
  require_request_id(a);
  const Json body = body_of(a);
  CHECK(body["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
  CHECK(body["object"] == "chat.completion");
  CHECK(body["created"] == 1700000000);
  CHECK(body["model"] == "gpt-4o-mini");
  REQUIRE(body["choices"].size() == 1);
  const Json& choice = body["choices"][0];
  CHECK(choice["index"] == 0);
  CHECK(choice["message"]["role"] == "assistant");
  CHECK(choice["message"]["content"] == "Hello there");
  CHECK(choice["message"]["refusal"].is_null());
  CHECK(choice["logprobs"].is_null());
  CHECK(choice["finish_reason"] == "stop");
  CHECK(body["usage"]["completion_tokens"] == 3);
  CHECK(body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"].get<int>() + 3);
  const Json other =
      body_of(action_of("api", "openai_api.completion { content = '', model = 'gpt-4o', finish_reason = 'length' }"));
  CHECK(other["model"] == "gpt-4o");
  CHECK(other["choices"][0]["finish_reason"] == "length");
}

TEST_CASE("openai_api.stream is a valid chat.completion.chunk event stream ending in [DONE]") {
  const ActionSpec a = action_of("api", "openai_api.stream { chunks = { 'Hel', 'lo' } }");
  CHECK(a.status == 200);
  CHECK(header(a, "content-type")->rfind("text/event-stream", 0) == 0);
  require_request_id(a);
  std::vector<std::string> events;
  for (size_t start = 0; start < a.body.size();) {
    const size_t end = a.body.find("\n\n", start);
    REQUIRE(end != std::string::npos);
    events.push_back(a.body.substr(start, end - start));
    start = end + 2;
  }
  REQUIRE(events.size() == 4);
  CHECK(events[3] == "data: [DONE]");
  std::string text;
  std::string id;
  for (size_t i = 0; i < 3; ++i) {
    REQUIRE(events[i].rfind("data: ", 0) == 0);
    const Json chunk = Json::parse(events[i].substr(6));
    CHECK(chunk["object"] == "chat.completion.chunk");
    CHECK(chunk["created"] == 1700000000);
    if (i == 0) id = chunk["id"];
    CHECK(chunk["id"] == id);
    const Json& choice = chunk["choices"][0];
    CHECK(choice["index"] == 0);
    if (choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
    CHECK(choice["delta"].contains("role") == (i == 0));
    CHECK(choice["finish_reason"] == (i == 2 ? Json("stop") : Json(nullptr)));
  }
  CHECK(text == "Hello");
  CHECK(Json::parse(events[2].substr(6))["choices"][0]["delta"] == Json::object());
  const ActionSpec empty = action_of("api", "openai_api.stream { chunks = {} }");
  CHECK(empty.body.find("data: [DONE]\n\n") != std::string::npos);
}

// --- function rules ---

namespace {

const char* kFunctionScenario =
    R"(local api = proxy { name = 'api', listen = '127.0.0.1:7201', upstream = '127.0.0.1:7202', protocol = 'http' }
api:rule {
  name = 'fn',
  key = function(msg) return msg.header['X-Test-Id'] end,
  action = function(msg, ctx)
    ctx.state.calls = (ctx.state.calls or 0) + 1
    if msg.path == '/nil' then return nil end
    if msg.path == '/boom' then error('boom') end
    if msg.path == '/string' then return 'oops' end
    if msg.path == '/redis' then return redis.error 'ERR wrong' end
    if msg.path == '/loop' then while true do end end
    if msg.path == '/memory' then local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end end
    if msg.path == '/random' then
      return http.respond(200, { body = ctx.random(1, 1000000) .. ',' .. ctx.random() })
    end
    if msg.path == '/state' then return http.respond(200, { body = tostring(ctx.state.calls) }) end
    if msg.path == '/keep' then ctx.state.kept = msg return nil end
    if msg.path == '/late' then return http.respond(200, { body = ctx.state.kept.header['x'] }) end
    if msg.path == '/declare' then proxy { name = 'late', listen = '127.0.0.1:7203', upstream = 'h:1' } end
    if msg.path == '/log' then ctx.log('hello', 42, nil) return pass() end
    if msg.path == '/preset' then return openai_api.rate_limit { retry_after = ctx.count } end
    if msg.path == '/fields' then
      return http.respond(200, { json = { stream = msg.json.stream, model = msg.json.model, nothing = msg.json.nothing,
        method = msg.method, host = msg.host, q = msg.query.q, h = msg.header['X-Test-Id'], count = ctx.count,
        key = ctx.key, rule = ctx.rule, conn = msg.connection, protocol = msg.protocol } })
    end
    return http.respond(503)
  end,
}
api:rule { name = 'badkey', key = function(msg) return { } end, action = pass() }
local cache = proxy { name = 'cache', listen = '127.0.0.1:7204', upstream = '127.0.0.1:7205', protocol = 'redis' }
cache:rule { name = 'echo', action = function(msg, ctx) return redis.reply { msg.command, msg.key, msg.args } end }
local pg = proxy { name = 'pg', listen = '127.0.0.1:7206', upstream = '127.0.0.1:7207', protocol = 'postgres' }
pg:rule { name = 'who', key = function(msg) return #msg.query end, action = function(msg, ctx)
  return postgres.error { sqlstate = '40001', message = msg.user .. '@' .. msg.database .. ': ' .. msg.query .. ' (' .. msg.message .. ')' }
end }
)";

struct Loaded {
  Scenario scenario;
  std::shared_ptr<ScriptHooks> hooks;
  const RuleSpec& rule(const std::string& proxy, size_t i) const { return proxy_named(scenario, proxy).rules.at(i); }
};

Loaded load_functions() {
  LoadResult result = load(kFunctionScenario);
  INFO("error: " << result.error);
  REQUIRE(result.scenario.has_value());
  REQUIRE(result.hooks != nullptr);
  return {*result.scenario, result.hooks};
}

FakeMessage http_message(const std::string& path, std::map<std::string, std::string> more = {}, Json body = nullptr) {
  more["method"] = "POST";
  more["path"] = path;
  more["host"] = "api.test";
  return FakeMessage(Protocol::http, std::move(more), std::move(body), 7);
}

struct Outcome {
  std::optional<ActionSpec> action;
  std::string error;
};

Outcome call(const Loaded& l, const std::string& path, uint64_t count = 1, const std::string& key = "k",
             std::map<std::string, std::string> more = {}, Json body = nullptr) {
  const RuleSpec& rule = l.rule("api", 0);
  const FakeMessage msg = http_message(path, std::move(more), std::move(body));
  ScriptHooks::CallContext ctx{&rule, count, l.scenario.seed, key};
  Outcome out;
  out.action = l.hooks->action(rule.action_function_ref, msg, ctx, &out.error);
  return out;
}

}  // namespace

TEST_CASE("a function rule returns an action, or nil for pass") {
  const Loaded l = load_functions();
  const RuleSpec& fn = l.rule("api", 0);
  CHECK(fn.action_function_ref >= 0);
  CHECK_FALSE(fn.action.has_value());
  CHECK(fn.key.kind == KeySpec::Kind::function);
  CHECK(fn.key.function_ref >= 0);

  Outcome out = call(l, "/other");
  CHECK(out.error.empty());
  REQUIRE(out.action.has_value());
  CHECK(out.action->type == Type::respond);
  CHECK(out.action->status == 503);

  out = call(l, "/nil");
  CHECK(out.error.empty());
  CHECK_FALSE(out.action.has_value());

  out = call(l, "/preset", 3);
  REQUIRE(out.action.has_value());
  CHECK(header(*out.action, "retry-after") == "3");
}

TEST_CASE("a function rule sees the message's fields and its context") {
  const Loaded l = load_functions();
  Outcome out = call(l, "/fields", 4, "abc", {{"query:q", "1"}, {"header:x-test-id", "t-9"}},
                     Json{{"stream", true}, {"model", "gpt"}});
  INFO(out.error);
  REQUIRE(out.action.has_value());
  const Json body = Json::parse(out.action->body);
  CHECK(body == Json{{"stream", true},
                     {"model", "gpt"},
                     {"method", "POST"},
                     {"host", "api.test"},
                     {"q", "1"},
                     {"h", "t-9"},
                     {"count", 4},
                     {"key", "abc"},
                     {"rule", "fn"},
                     {"conn", 7},
                     {"protocol", "http"}});

  const RuleSpec& echo = l.rule("cache", 0);
  const FakeMessage get(Protocol::redis, {{"command", "GET"}, {"key", "user:1"}, {"arg:1", "user:1"}, {"arg:2", "x"}});
  std::string error;
  auto reply = l.hooks->action(echo.action_function_ref, get, {&echo, 1, 1, ""}, &error);
  INFO(error);
  REQUIRE(reply.has_value());
  CHECK(reply->value == Json::parse(R"(["GET", "user:1", ["user:1", "x"]])"));

  const RuleSpec& who = l.rule("pg", 0);
  const FakeMessage query(Protocol::postgres,
                          {{"query", "SELECT 1"}, {"message", "Query"}, {"user", "alice"}, {"database", "app"}});
  auto failed = l.hooks->action(who.action_function_ref, query, {&who, 1, 1, ""}, &error);
  REQUIRE(failed.has_value());
  CHECK(failed->message == "alice@app: SELECT 1 (Query)");
  CHECK(l.hooks->key(who.key.function_ref, query, &error) == "8");  // a number key counts as its text
}

TEST_CASE("an error inside a function rule comes back with FILE:LINE") {
  const Loaded l = load_functions();
  Outcome out = call(l, "/boom");
  CHECK_FALSE(out.action.has_value());
  CHECK(out.error == "s.lua:8: boom");

  out = call(l, "/string");
  CHECK_FALSE(out.action.has_value());
  CHECK(out.error.rfind("s.lua:5: rule 'fn': the action function must return an action", 0) == 0);
  CHECK(out.error.find("got 'oops'") != std::string::npos);

  out = call(l, "/redis");
  CHECK_FALSE(out.action.has_value());
  CHECK(out.error.find("rule 'fn': the action function returned redis.error, an action for redis proxies; "
                       "this rule's proxy is http") != std::string::npos);

  out = call(l, "/declare");
  INFO(out.error);
  CHECK(out.error.rfind("s.lua:19: ", 0) == 0);
  CHECK(out.error.find("declarations are closed") != std::string::npos);

  // The state is still usable afterwards.
  CHECK(call(l, "/other").action.has_value());
}

TEST_CASE("msg.header and friends cannot be read after the call") {
  const Loaded l = load_functions();
  CHECK(call(l, "/keep").error.empty());
  const Outcome out = call(l, "/late");
  CHECK_FALSE(out.action.has_value());
  CHECK(out.error.rfind("s.lua:18: ", 0) == 0);
  CHECK(out.error.find("msg.header can be read only while the rule function runs") != std::string::npos);
}

TEST_CASE("ctx.random is the Decider's draw for (seed, rule, key, count)") {
  const Loaded l = load_functions();
  const auto body = [&](uint64_t count, const std::string& key) {
    const Outcome out = call(l, "/random", count, key);
    INFO(out.error);
    REQUIRE(out.action.has_value());
    return out.action->body;
  };
  const std::string first = body(1, "k");
  CHECK(first == body(1, "k"));
  const Loaded again = load_functions();  // another run of the same scenario
  const Outcome rerun = call(again, "/random", 1, "k");
  REQUIRE(rerun.action.has_value());
  CHECK(rerun.action->body == first);
  CHECK(first != body(2, "k"));
  CHECK(first != body(1, "other"));
  auto rng = faultline::faults::decide(l.scenario.seed, "fn", "k", 1);
  const int64_t expected = rng.range(1, 1000000);
  CHECK(first.substr(0, first.find(',')) == std::to_string(expected));
}

TEST_CASE("ctx.state persists between calls and across rules of the run") {
  const Loaded l = load_functions();
  call(l, "/other");
  call(l, "/nil");
  const Outcome out = call(l, "/state");
  REQUIRE(out.action.has_value());
  CHECK(out.action->body == "3");
}

TEST_CASE("ctx.log writes one line to stderr and the call goes on") {
  const Loaded l = load_functions();
  const Outcome out = call(l, "/log");
  CHECK(out.error.empty());
  REQUIRE(out.action.has_value());
  CHECK(out.action->type == Type::pass);
}

TEST_CASE("a key function gives the key value, nil for the shared count, or an error naming the rule") {
  const Loaded l = load_functions();
  const RuleSpec& fn = l.rule("api", 0);
  std::string error;
  CHECK(l.hooks->key(fn.key.function_ref, http_message("/", {{"header:x-test-id", "t-1"}}), &error) == "t-1");
  CHECK(error.empty());
  CHECK_FALSE(l.hooks->key(fn.key.function_ref, http_message("/"), &error).has_value());
  CHECK(error.empty());
  const RuleSpec& bad = l.rule("api", 1);
  CHECK_FALSE(l.hooks->key(bad.key.function_ref, http_message("/"), &error).has_value());
  INFO(error);
  CHECK(error.rfind("s.lua:30: rule 'badkey': the key function must return a string or nil, got table", 0) == 0);
}

TEST_CASE("a runaway rule function is stopped and the state stays usable") {
  const Loaded l = load_functions();
  const auto start = std::chrono::steady_clock::now();
  Outcome out = call(l, "/loop");
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  CHECK_FALSE(out.action.has_value());
  CHECK(out.error.rfind("s.lua:11: ", 0) == 0);
  CHECK(out.error.find("rule function ran too long") != std::string::npos);
  CHECK(call(l, "/other").action.has_value());
}

TEST_CASE("a rule function that eats memory is stopped by the memory cap") {
  const Loaded l = load_functions();
  Outcome out = call(l, "/memory");
  CHECK_FALSE(out.action.has_value());
  CHECK(out.error.find("not enough memory") != std::string::npos);
  CHECK(out.error.rfind("s.lua:12: ", 0) == 0);
  CHECK(call(l, "/other").action.has_value());
}
