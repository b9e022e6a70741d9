// p:rule { name, match, first | nth | after | every, probability, times, during, key, action }.
#include "lua/rule_reader.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>
#include <map>

#include "lua/actions.h"
#include "lua/json_values.h"
#include "lua/lua_errors.h"
#include "lua/matchers.h"
#include "lua/table_fields.h"

namespace faultline::lua {

namespace {

using faults::Protocol;

const std::vector<std::string> kRuleFields = {"action", "after", "during", "every", "first",
                                              "key",    "match", "name",   "nth",   "probability",
                                              "times",  "ttl"};
const std::vector<std::string> kScheduleFields = {"first", "nth", "after", "every"};

// Which protocols a match field belongs to (SPEC §2.1); empty = every protocol.
const std::map<std::string, std::vector<Protocol>> kMatchFields = {
    {"connection", {}},
    {"method", {Protocol::http}},
    {"path", {Protocol::http}},
    {"host", {Protocol::http}},
    {"header", {Protocol::http}},
    {"json", {Protocol::http}},
    {"query", {Protocol::http, Protocol::postgres}},
    {"command", {Protocol::redis}},
    {"key", {Protocol::redis}},
    {"args", {Protocol::redis}},
    {"message", {Protocol::postgres}},
    {"user", {Protocol::postgres}},
    {"database", {Protocol::postgres}},
};

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::string match_fields_for(Protocol protocol) {
  std::vector<std::string> names;
  for (const auto& [name, protocols] : kMatchFields)
    if (protocols.empty() || std::find(protocols.begin(), protocols.end(), protocol) != protocols.end())
      names.push_back(name);
  return join(names);
}

std::string protocol_list(const std::vector<Protocol>& protocols) {
  std::string out;
  for (size_t i = 0; i < protocols.size(); ++i)
    out += std::string(i == 0 ? "" : " and ") + faults::to_string(protocols[i]);
  return out;
}

// Pushes t[name] (raw) and returns its type.
int push_field(lua_State* L, const TableFields& fields, const std::string& name) {
  lua_pushlstring(L, name.data(), name.size());
  return lua_rawget(L, fields.index());
}

// Reads the rule's table fields and holds what every part of the reading needs.
class RuleReader {
 public:
  RuleReader(lua_State* L, TableFields& fields, const faults::ProxySpec& proxy)
      : L_(L), fields_(fields), proxy_(proxy) {}

  faults::RuleSpec read() {
    faults::RuleSpec rule;
    rule.name = read_name();
    fields_.set_label("rule '" + rule.name + "'");
    fields_.reject_unknown(kRuleFields);
    if (fields_.has("match")) rule.match = read_match();
    rule.schedule = read_schedule();
    if (const auto ttl = fields_.number("ttl")) {
      if (!(*ttl > 0.0 && *ttl < 1e9)) fail("ttl must be a positive number of seconds, got " + number_text(*ttl));
      rule.ttl_s = *ttl;
    }
    if (fields_.has("key")) rule.key = read_key();
    read_action(rule);
    return rule;
  }

 private:
  [[noreturn]] void fail(const std::string& message) const { fields_.fail(message); }

  std::string read_name() {
    const auto name = fields_.string("name");
    if (!name) return proxy_.name + "-" + std::to_string(proxy_.rules.size() + 1);
    if (!valid_name(*name))
      fail("name '" + *name + "' may only contain letters, digits, '_' and '-' (and may not be empty)");
    return *name;
  }

  // --- match ---

  std::vector<faults::Condition> read_match() {
    push_field(L_, fields_, "match");
    TableFields match(L_, -1, fields_.label(), "match = { field = value, ... }");
    std::vector<faults::Condition> conditions;
    for (const auto& name : match.names()) {
      check_match_field(name);
      push_field(L_, match, name);
      read_condition(name, conditions);
      lua_pop(L_, 1);
    }
    lua_pop(L_, 1);
    return conditions;
  }

  void check_match_field(const std::string& name) const {
    auto it = kMatchFields.find(name);
    if (it == kMatchFields.end())
      fail("unknown match field '" + name + "' (fields for " + faults::to_string(proxy_.protocol) +
           " proxies: " + match_fields_for(proxy_.protocol) + ")");
    const auto& protocols = it->second;
    if (protocols.empty() || std::find(protocols.begin(), protocols.end(), proxy_.protocol) != protocols.end()) return;
    fail("match field '" + name + "' is for " + protocol_list(protocols) + " proxies; proxy '" + proxy_.name + "' is " +
         faults::to_string(proxy_.protocol));
  }

  faults::StringMatcher matcher(int index, const std::string& what) const {
    return read_matcher(L_, index, fields_.label() + ": " + what);
  }

  // The value of match field `name` is on top of the stack.
  void read_condition(const std::string& name, std::vector<faults::Condition>& out) {
    const std::string what = "match field '" + name + "'";
    if (name == "header" || (name == "query" && proxy_.protocol == Protocol::http)) {
      read_named(name, out);
      return;
    }
    if (name == "json") {
      read_json(out);
      return;
    }
    if (name == "args") {
      read_args(out);
      return;
    }
    faults::Condition condition;
    condition.field = name;
    int is_integer = 0;
    const lua_Integer ordinal = lua_type(L_, -1) == LUA_TNUMBER ? lua_tointegerx(L_, -1, &is_integer) : 0;
    if (name == "connection" && is_integer != 0) {
      if (ordinal < 1) fail("match field 'connection' must be >= 1 (connections count from 1)");
      condition.matcher.text = std::to_string(ordinal);
    } else {
      condition.matcher = matcher(-1, what);
    }
    // Redis commands are case-insensitive on the wire; host names are case-insensitive in DNS.
    if (name == "command" || name == "host") make_case_insensitive(condition.matcher);
    out.push_back(std::move(condition));
  }

  // header = { ["x-name"] = matcher } (names lower-cased) or query = { name = matcher }.
  void read_named(const std::string& name, std::vector<faults::Condition>& out) {
    const std::string shape = name + " = { [\"name\"] = value, ... }";
    TableFields table(L_, -1, fields_.label() + ": match field '" + name + "'", shape.c_str());
    std::vector<std::string> seen;
    std::vector<faults::Condition> named;
    for (const auto& key : table.names()) {
      const std::string field_name = name == "header" ? lower(key) : key;
      if (name == "header" && std::find(seen.begin(), seen.end(), field_name) != seen.end())
        fail("header '" + field_name + "' is given twice (header names are case-insensitive)");
      seen.push_back(field_name);
      push_field(L_, table, key);
      faults::Condition condition;
      condition.field = name + ":" + field_name;
      condition.matcher = matcher(-1, name + " '" + key + "'");
      lua_pop(L_, 1);
      named.push_back(std::move(condition));
    }
    // Sorted by the names as the message knows them (lower-case for headers).
    std::sort(named.begin(), named.end(), [](const auto& a, const auto& b) { return a.field < b.field; });
    for (auto& condition : named) out.push_back(std::move(condition));
  }

  // json = { field = value }: strings and matchers match the field's text, anything else its JSON value.
  void read_json(std::vector<faults::Condition>& out) {
    TableFields table(L_, -1, fields_.label() + ": match field 'json'", "json = { field = value, ... }");
    for (const auto& key : table.names()) {
      push_field(L_, table, key);
      faults::Condition condition;
      condition.field = "json:" + key;
      if (lua_type(L_, -1) == LUA_TSTRING || is_matcher(L_, -1))
        condition.matcher = matcher(-1, "json field '" + key + "'");
      else
        condition.json_equals = to_json(L_, -1, fields_.label() + ": json field '" + key + "'");
      lua_pop(L_, 1);
      out.push_back(std::move(condition));
    }
  }

  // args = { "a", prefix "b" } or { [2] = "x" }: argument N of the command, 1-based.
  void read_args(std::vector<faults::Condition>& out) {
    if (lua_type(L_, -1) != LUA_TTABLE)
      fail("match field 'args' must be a list { \"a\", prefix \"b\", ... } or { [2] = \"x\" }, got " +
           describe_value(L_, -1));
    const int table = lua_gettop(L_);
    std::vector<lua_Integer> positions;
    lua_pushnil(L_);
    while (lua_next(L_, table) != 0) {
      lua_pop(L_, 1);
      if (!lua_isinteger(L_, -1) || lua_tointeger(L_, -1) < 1) {
        const std::string key = describe_value(L_, -1);
        lua_pop(L_, 1);
        fail("match field 'args' takes argument positions 1, 2, ... as keys, got " + key);
      }
      positions.push_back(lua_tointeger(L_, -1));
    }
    std::sort(positions.begin(), positions.end());
    for (const lua_Integer position : positions) {
      lua_rawgeti(L_, table, position);
      faults::Condition condition;
      condition.field = "arg:" + std::to_string(position);
      condition.matcher = matcher(-1, "args[" + std::to_string(position) + "]");
      lua_pop(L_, 1);
      out.push_back(std::move(condition));
    }
  }

  // --- schedule ---

  uint64_t positive(const char* name) const {
    const int64_t value = *fields_.integer(name);
    if (value < 1) fail(std::string(name) + " must be a positive integer, got " + std::to_string(value));
    return static_cast<uint64_t>(value);
  }

  faults::Schedule read_schedule() {
    faults::Schedule schedule;
    std::vector<std::string> given;
    for (const auto& name : kScheduleFields)
      if (fields_.has(name)) given.push_back(name);
    if (given.size() > 1) fail("give at most one of first, nth, after, every (got " + join(given) + ")");
    if (fields_.has("first")) {
      schedule.kind = faults::Schedule::Kind::first;
      schedule.n = positive("first");
    } else if (fields_.has("after")) {
      schedule.kind = faults::Schedule::Kind::after;
      schedule.n = positive("after");
    } else if (fields_.has("every")) {
      schedule.kind = faults::Schedule::Kind::every;
      schedule.n = positive("every");
    } else if (fields_.has("nth")) {
      schedule.kind = faults::Schedule::Kind::nth;
      schedule.nths = read_nth();
    }
    if (const auto probability = fields_.number("probability")) {
      if (!(*probability >= 0.0 && *probability <= 1.0))
        fail("probability must be a number between 0 and 1, got " + number_text(*probability));
      schedule.probability = *probability;
    }
    if (fields_.has("times")) schedule.times = positive("times");
    if (fields_.has("during")) schedule.during = read_during();
    return schedule;
  }

  std::vector<uint64_t> read_nth() {
    const char* expected = "nth must be a positive integer or a non-empty list of them, e.g. nth = {2, 5}, got ";
    const int type = push_field(L_, fields_, "nth");
    std::vector<uint64_t> nths;
    if (type == LUA_TNUMBER) {
      lua_pop(L_, 1);
      nths.push_back(positive("nth"));
      return nths;
    }
    if (type != LUA_TTABLE) fail(expected + describe_value(L_, -1));
    const int table = lua_gettop(L_);
    const auto count = static_cast<lua_Integer>(lua_rawlen(L_, table));
    lua_Integer entries = 0;
    lua_pushnil(L_);
    while (lua_next(L_, table) != 0) {
      lua_pop(L_, 1);
      ++entries;
    }
    if (count == 0 || entries != count) fail(std::string(expected) + "a table that is not a list of them");
    for (lua_Integer i = 1; i <= count; ++i) {
      lua_rawgeti(L_, table, i);
      int is_integer = 0;
      const lua_Integer n = lua_tointegerx(L_, -1, &is_integer);
      if (lua_type(L_, -1) != LUA_TNUMBER || is_integer == 0 || n < 1)
        fail("nth: item " + std::to_string(i) + " must be a positive integer, got " + describe_value(L_, -1));
      nths.push_back(static_cast<uint64_t>(n));
      lua_pop(L_, 1);
    }
    lua_pop(L_, 1);
    std::sort(nths.begin(), nths.end());
    nths.erase(std::unique(nths.begin(), nths.end()), nths.end());
    return nths;
  }

  std::pair<double, double> read_during() {
    push_field(L_, fields_, "during");
    TableFields during(L_, -1, fields_.label() + ": during", "{ from = seconds, to = seconds }");
    during.reject_unknown({"from", "to"});
    const double from = during.number("from").value_or(0.0);
    const double to = during.number("to").value_or(std::numeric_limits<double>::infinity());
    if (!(from >= 0.0)) during.fail("from must be >= 0 seconds, got " + number_text(from));
    if (!(to >= 0.0)) during.fail("to must be >= 0 seconds, got " + number_text(to));
    if (!(from < to)) during.fail("from (" + number_text(from) + ") must be before to (" + number_text(to) + ")");
    lua_pop(L_, 1);
    return {from, to};
  }

  static std::string number_text(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.14g", value);
    return text;
  }

  // --- key ---

  faults::KeySpec read_key() {
    faults::KeySpec key;
    const int type = push_field(L_, fields_, "key");
    if (type == LUA_TFUNCTION) {
      key.kind = faults::KeySpec::Kind::function;
      key.function_ref = luaL_ref(L_, LUA_REGISTRYINDEX);
      return key;
    }
    if (type != LUA_TSTRING) fail("key must be a string or a function(msg), got " + describe_value(L_, -1));
    const std::string text = lua_tostring(L_, -1);
    lua_pop(L_, 1);
    if (text == "connection") {
      key.kind = faults::KeySpec::Kind::connection;
      return key;
    }
    key.kind = faults::KeySpec::Kind::field;
    const Protocol protocol = key_protocol(text);
    if (protocol != proxy_.protocol)
      fail("key '" + text + "' is for " + faults::to_string(protocol) + " proxies; proxy '" + proxy_.name + "' is " +
           faults::to_string(proxy_.protocol));
    key.field = text.rfind("header:", 0) == 0 ? lower(text) : text;
    return key;
  }

  Protocol key_protocol(const std::string& text) const {
    if (text.rfind("header:", 0) == 0) {
      if (text.size() == 7) fail("key 'header:' needs a header name, e.g. key = \"header:x-test-id\"");
      return Protocol::http;
    }
    if (text == "key") return Protocol::redis;
    if (text == "user" || text == "database") return Protocol::postgres;
    fail("unknown key '" + text + "' (valid keys for " + faults::to_string(proxy_.protocol) +
         " proxies: " + valid_keys() + ")");
  }

  std::string valid_keys() const {
    switch (proxy_.protocol) {
      case Protocol::http:
        return "\"connection\", \"header:NAME\" or a function(msg)";
      case Protocol::redis:
        return "\"connection\", \"key\" or a function(msg)";
      case Protocol::postgres:
        return "\"connection\", \"user\", \"database\" or a function(msg)";
      default:
        return "\"connection\" or a function(msg)";
    }
  }

  // --- action ---

  void read_action(faults::RuleSpec& rule) {
    const char* expected = "an action such as delay(100) or http.respond(503), or a function(msg, ctx)";
    if (!fields_.has("action")) fail(std::string("missing field 'action' (") + expected + ")");
    const int type = push_field(L_, fields_, "action");
    std::string constructor;
    if (const faults::ActionSpec* action = to_action(L_, -1, &constructor)) {
      const std::string wrong = check_action_protocol(*action, constructor, proxy_);
      if (!wrong.empty()) fail(wrong);
      rule.action = *action;
      lua_pop(L_, 1);
      return;
    }
    if (type == LUA_TFUNCTION) {
      const std::string name = constructor_name(L_, -1);
      if (!name.empty()) fail("action = " + name + " names the action without calling it; write " + name + "(...)");
      rule.action_function_ref = luaL_ref(L_, LUA_REGISTRYINDEX);
      return;
    }
    fail(std::string("action must be ") + expected + ", got " + describe_value(L_, -1));
  }

  lua_State* L_;
  TableFields& fields_;
  const faults::ProxySpec& proxy_;
};

}  // namespace

faults::RuleSpec read_rule(lua_State* L, int index, const faults::ProxySpec& proxy) {
  TableFields fields(L, index, "rule", "{ match = { ... }, action = ... }");
  return RuleReader(L, fields, proxy).read();
}

bool uses_function(const faults::RuleSpec& rule) {
  return rule.action_function_ref >= 0 || rule.key.kind == faults::KeySpec::Kind::function;
}

}  // namespace faultline::lua
