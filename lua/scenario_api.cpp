// seed(), proxy{}, p:toxic{}, p:rule{}, expect{}: check what the scenario wrote and record it.
#include "lua/scenario_api.h"

#include <algorithm>
#include <cstdio>

#include "faults/address.h"
#include "faults/toxics/registry.h"
#include "lua/lua_errors.h"
#include "lua/rule_reader.h"
#include "lua/sandbox.h"
#include "lua/table_fields.h"

namespace faultline::lua {

namespace {

constexpr const char* kProxyMeta = "faultline.proxy";

// A proxy object in Lua is a userdata holding the index of its ProxySpec.
struct ProxyRef {
  size_t index;
};

const std::vector<std::string> kProxyFields = {"listen",   "name",         "protocol",        "tls",
                                               "tls_verify", "upstream", "upstream_timeout", "upstream_tls"};
const std::vector<std::string> kToxicFields = {"attributes", "name", "stream", "toxicity", "ttl", "type"};
const std::vector<std::string> kExpectFields = {"fired", "fired_at_least", "fired_at_most", "rule", "toxic"};
const std::vector<std::pair<const char*, faults::ExpectSpec::Kind>> kExpectCounts = {
    {"fired", faults::ExpectSpec::Kind::exactly},
    {"fired_at_least", faults::ExpectSpec::Kind::at_least},
    {"fired_at_most", faults::ExpectSpec::Kind::at_most},
};

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

template <typename Range, typename Name>
std::string join_names(const Range& items, Name name) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + std::string(name(item));
  return out;
}

std::string format_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.14g", value);
  return text;
}

void check_name(const TableFields& fields, const std::string& name) {
  if (!valid_name(name))
    fields.fail("name '" + name + "' may only contain letters, digits, '_' and '-' (and may not be empty)");
}

void reject_unknown(const TableFields& fields, const std::vector<std::string>& known) {
  for (const auto& name : fields.names())
    if (!contains(known, name)) {
      fields.fail("unknown field '" + name + "' (valid fields: " + join(known) + ")");
    }
}

faults::HostPort parse_address(const TableFields& fields, const char* field, const std::string& text) {
  std::string why;
  auto parsed = faults::parse_host_port(text, &why);
  if (!parsed) fields.fail(std::string("bad ") + field + " address '" + text + "': " + why);
  return *parsed;
}

// "http://host[:port][/]" and "https://host[:port][/]" for http proxies become "host:port" (https sets
// upstream_tls); "mock" serves the openai_api defaults; any other URL is refused.
void read_upstream(const TableFields& fields, const std::string& text, faults::ProxySpec& spec) {
  if (text == "mock") {
    if (spec.protocol != faults::Protocol::http)
      fields.fail("upstream 'mock' needs protocol = \"http\" (it answers HTTP requests with openai_api mocks)");
    spec.mock = true;
    spec.upstream = "mock";
    return;
  }
  const auto scheme_end = text.find("://");
  if (scheme_end == std::string::npos) {
    parse_address(fields, "upstream", text);
    spec.upstream = text;
    return;
  }
  const bool https = text.rfind("https://", 0) == 0;
  if ((!https && text.rfind("http://", 0) != 0) || spec.protocol != faults::Protocol::http)
    fields.fail("upstream '" + text +
                "': only a protocol = \"http\" proxy takes a URL (http:// or https://host:port); write host:port");
  std::string authority = text.substr(scheme_end + 3);
  if (!authority.empty() && authority.back() == '/') authority.pop_back();
  if (authority.find('/') != std::string::npos)
    fields.fail("upstream '" + text + "' has a path; give only " + (https ? "https" : "http") +
                "://host:port (requests keep their own paths)");
  const bool has_port = authority.rfind(':') != std::string::npos && authority.back() != ']';
  if (!has_port) authority += https ? ":443" : ":80";
  parse_address(fields, "upstream", authority);
  spec.upstream = authority;
  spec.upstream_tls = https;
}

// tls = { cert = "file.pem", key = "file.key" } or tls = "auto".
void read_listen_tls(lua_State* L, const TableFields& fields, faults::ProxySpec& spec) {
  const int type = fields.push("tls");
  if (type == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  if (spec.protocol != faults::Protocol::http) {
    lua_pop(L, 1);
    fields.fail("tls (terminating TLS on the listener) needs protocol = \"http\"");
  }
  if (type == LUA_TSTRING) {
    const std::string text = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (text != "auto") fields.fail("tls must be \"auto\" or { cert = \"file.pem\", key = \"file.key\" }, got '" + text + "'");
    spec.tls.mode = faults::ListenTls::Mode::auto_cert;
    return;
  }
  if (type != LUA_TTABLE) {
    lua_pop(L, 1);
    fields.fail("tls must be \"auto\" or { cert = \"file.pem\", key = \"file.key\" }");
  }
  const TableFields nested(L, -1, fields.label(), "tls = { cert = , key = }");
  nested.reject_unknown({"cert", "key"});
  const auto cert = nested.string("cert");
  const auto key = nested.string("key");
  lua_pop(L, 1);
  if (!cert || !key) fields.fail("tls needs both cert and key (PEM file paths), or tls = \"auto\"");
  spec.tls.mode = faults::ListenTls::Mode::files;
  spec.tls.cert = *cert;
  spec.tls.key = *key;
}

faults::Protocol read_protocol(const TableFields& fields) {
  const auto text = fields.string("protocol");
  if (!text) return faults::Protocol::tcp;
  const auto protocol = faults::protocol_from(*text);
  if (!protocol) fields.fail("unknown protocol '" + *text + "' (expected tcp, http, redis or postgres)");
  return *protocol;
}

faults::ProxySpec read_proxy(lua_State* L, TableFields& fields) {
  reject_unknown(fields, kProxyFields);
  faults::ProxySpec spec;
  const auto name = fields.string("name");
  if (!name) fields.fail("missing field 'name'");
  check_name(fields, *name);
  spec.name = *name;
  fields.set_label("proxy '" + spec.name + "'");
  spec.protocol = read_protocol(fields);
  const auto listen = fields.string("listen");
  if (!listen) fields.fail("missing field 'listen' (host:port to accept clients on)");
  parse_address(fields, "listen", *listen);
  spec.listen = *listen;
  const auto upstream = fields.string("upstream");
  if (!upstream) fields.fail("missing field 'upstream' (host:port to forward to)");
  read_upstream(fields, *upstream, spec);
  if (const auto tls = fields.boolean("upstream_tls")) {
    if (spec.protocol != faults::Protocol::postgres)
      fields.fail(spec.protocol == faults::Protocol::http
                      ? "upstream_tls applies to postgres proxies; an http proxy takes an https:// upstream"
                      : "upstream_tls applies to protocol = \"postgres\" proxies");
    spec.upstream_tls = *tls;
  }
  if (const auto verify = fields.boolean("tls_verify")) {
    if (!spec.upstream_tls) fields.fail("tls_verify applies to a TLS upstream only (https://, or upstream_tls = true)");
    spec.tls_verify = *verify;
  }
  read_listen_tls(L, fields, spec);
  if (const auto timeout = fields.integer("upstream_timeout")) {
    if (spec.protocol != faults::Protocol::http) fields.fail("upstream_timeout applies to protocol = \"http\" proxies");
    if (*timeout < 0) fields.fail("upstream_timeout must be >= 0 ms (0 = wait forever), got " + std::to_string(*timeout));
    spec.upstream_timeout_ms = *timeout;
  }
  return spec;
}

// --- toxics ---

std::string toxic_type_names() {
  return join_names(faults::toxic_types(), [](const faults::ToxicType& t) { return t.type; });
}

std::string attribute_names(const faults::ToxicType& type) {
  return join_names(type.attributes, [](const faults::AttributeSpec& a) { return a.name; });
}

const faults::AttributeSpec* find_attribute(const faults::ToxicType& type, const std::string& name) {
  for (const auto& attribute : type.attributes)
    if (name == attribute.name) return &attribute;
  return nullptr;
}

const faults::ToxicType& read_toxic_type(const TableFields& fields) {
  const auto name = fields.string("type");
  if (!name) fields.fail("missing field 'type' (one of " + toxic_type_names() + ")");
  const faults::ToxicType* type = faults::find_toxic_type(*name);
  // No "toxic:" in front: the message reads as DESIGN.md's example of an error users see.
  if (type == nullptr)
    throw ScriptError("unknown toxic type '" + *name + "' (valid types: " + toxic_type_names() + ")");
  return *type;
}

[[noreturn]] void fail_unknown_attribute(const TableFields& fields, const faults::ToxicType& type,
                                         const std::string& name) {
  fields.fail("unknown attribute '" + name + "' (" + type.type + " takes " + attribute_names(type) +
              "; every toxic takes " + join(kToxicFields) + ")");
}

// Reads one attribute's value from `fields` and checks it against the registry's minimum.
int64_t read_attribute(const TableFields& fields, const faults::AttributeSpec& spec) {
  const int64_t value = *fields.integer(spec.name, "attribute");
  if (value < spec.min)
    fields.fail(std::string("attribute '") + spec.name + "' must be >= " + std::to_string(spec.min) + ", got " +
                std::to_string(value));
  return value;
}

// Attributes come as fields of the toxic (latency = 100) or Toxiproxy-style in attributes = {...}.
std::map<std::string, int64_t> read_attributes(lua_State* L, const TableFields& fields, const faults::ToxicType& type) {
  std::map<std::string, int64_t> given;
  for (const auto& name : fields.names()) {
    if (contains(kToxicFields, name)) continue;
    const auto* spec = find_attribute(type, name);
    if (spec == nullptr) fail_unknown_attribute(fields, type, name);
    given[name] = read_attribute(fields, *spec);
  }
  if (fields.has("attributes")) {
    lua_pushliteral(L, "attributes");
    lua_rawget(L, fields.index());
    const TableFields nested(L, -1, fields.label(), "{ name = value, ... } in 'attributes'");
    for (const auto& name : nested.names()) {
      const auto* spec = find_attribute(type, name);
      if (spec == nullptr) fail_unknown_attribute(fields, type, name);
      if (given.count(name) != 0) fields.fail("attribute '" + name + "' is given twice (directly and in attributes)");
      given[name] = read_attribute(nested, *spec);
    }
    lua_pop(L, 1);
  }
  return given;
}

// Every attribute of the type ends up in the spec: given, or the registry's default.
std::map<std::string, int64_t> complete_attributes(const TableFields& fields, const faults::ToxicType& type,
                                                   const std::map<std::string, int64_t>& given) {
  std::map<std::string, int64_t> all;
  for (const auto& spec : type.attributes) {
    auto it = given.find(spec.name);
    if (it == given.end() && spec.required) fields.fail(std::string("missing attribute '") + spec.name + "'");
    all[spec.name] = it != given.end() ? it->second : spec.default_value;
  }
  return all;
}

faults::ToxicSpec read_toxic(lua_State* L, TableFields& fields) {
  faults::ToxicSpec spec;
  const faults::ToxicType& type = read_toxic_type(fields);
  spec.type = type.type;
  const auto name = fields.string("name");
  fields.set_label("toxic '" + (name ? *name : spec.type) + "'");
  if (name) check_name(fields, *name);
  if (const auto stream = fields.string("stream")) {
    const auto parsed = faults::stream_from(*stream);
    if (!parsed) fields.fail("stream must be \"upstream\" or \"downstream\", got '" + *stream + "'");
    spec.stream = *parsed;
  }
  if (const auto toxicity = fields.number("toxicity")) {
    if (!(*toxicity >= 0.0 && *toxicity <= 1.0))
      fields.fail("toxicity must be a number between 0 and 1, got " + format_number(*toxicity));
    spec.toxicity = *toxicity;
  }
  if (const auto ttl = fields.number("ttl")) {
    if (!(*ttl > 0.0 && *ttl < 1e9)) fields.fail("ttl must be a positive number of seconds, got " + format_number(*ttl));
    spec.ttl_s = *ttl;
  }
  spec.name = name ? *name : spec.type + "_" + faults::to_string(spec.stream);
  spec.attributes = complete_attributes(fields, type, read_attributes(L, fields, type));
  return spec;
}

// --- expectations ---

uint64_t read_count(const TableFields& fields, const char* name) {
  const int64_t value = *fields.integer(name);
  if (value < 0) fields.fail(std::string(name) + " must be a non-negative integer, got " + std::to_string(value));
  return static_cast<uint64_t>(value);
}

void read_expect_count(const TableFields& fields, faults::ExpectSpec& spec) {
  std::vector<std::string> given;
  for (const auto& [name, kind] : kExpectCounts) {
    if (!fields.has(name)) continue;
    given.emplace_back(name);
    spec.kind = kind;
    spec.count = read_count(fields, name);
  }
  if (given.size() != 1)
    fields.fail("give exactly one of fired, fired_at_least, fired_at_most" +
                (given.empty() ? std::string() : " (got " + join(given) + ")"));
}

// Returns whether the expect names a toxic (else a rule).
bool read_expect_target(const TableFields& fields, faults::ExpectSpec& spec) {
  const auto rule = fields.string("rule");
  const auto toxic = fields.string("toxic");
  if (rule && toxic) fields.fail("give either rule = NAME or toxic = NAME, not both");
  if (!rule && !toxic) fields.fail("missing field 'rule' (or 'toxic')");
  spec.name = rule ? *rule : *toxic;
  return !rule;
}

}  // namespace

ScenarioApi::ScenarioApi(std::string path, std::optional<uint64_t> seed_override) : seed_override_(seed_override) {
  scenario_.path = std::move(path);
  scenario_.seed = seed_override.value_or(1);
}

ScenarioApi& ScenarioApi::self(lua_State* L) {
  auto& api = *static_cast<ScenarioApi*>(lua_touserdata(L, lua_upvalueindex(1)));
  api.check_open();
  return api;
}

void ScenarioApi::check_open() const {
  if (finished_) throw ScriptError("the scenario has finished loading; declarations are closed");
}

void ScenarioApi::install(lua_State* L) {
  auto set_function = [&](int table, const char* name, lua_CFunction fn) {
    table = lua_absindex(L, table);
    lua_pushlightuserdata(L, this);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, table, name);
  };
  lua_pushglobaltable(L);
  set_function(-1, "seed", guarded<&ScenarioApi::lua_seed>);
  set_function(-1, "proxy", guarded<&ScenarioApi::lua_proxy>);
  set_function(-1, "expect", guarded<&ScenarioApi::lua_expect>);
  lua_pop(L, 1);

  luaL_newmetatable(L, kProxyMeta);
  lua_createtable(L, 0, 2);
  set_function(-1, "toxic", guarded<&ScenarioApi::lua_toxic>);
  set_function(-1, "rule", guarded<&ScenarioApi::lua_rule>);
  lua_setfield(L, -2, "__index");
  set_function(-1, "__tostring", guarded<&ScenarioApi::lua_proxy_tostring>);
  lua_pop(L, 1);
}

int ScenarioApi::lua_seed(lua_State* L) {
  ScenarioApi& api = self(L);
  int is_integer = 0;
  const lua_Integer n = lua_type(L, 1) == LUA_TNUMBER ? lua_tointegerx(L, 1, &is_integer) : 0;
  if (lua_gettop(L) != 1 || is_integer == 0 || n < 0)
    throw ScriptError("seed: expected a non-negative integer, got " +
                      (lua_gettop(L) == 0 ? std::string("nothing") : describe_value(L, 1)));
  api.scenario_.seed_set = true;
  if (api.seed_override_) return 0;  // --seed wins over the script
  api.scenario_.seed = static_cast<uint64_t>(n);
  Sandbox::of(L).seed_random(api.scenario_.seed);
  return 0;
}

int ScenarioApi::lua_proxy(lua_State* L) {
  ScenarioApi& api = self(L);
  TableFields fields(L, 1, "proxy", "{ name = ..., listen = ..., upstream = ... }");
  faults::ProxySpec spec = read_proxy(L, fields);
  spec.where = where_at(L, 1);
  api.add_proxy(L, std::move(spec));
  return 1;
}

void ScenarioApi::add_proxy(lua_State* L, faults::ProxySpec spec) {
  for (const auto& other : scenario_.proxies)
    if (other.name == spec.name)
      throw ScriptError("proxy: duplicate proxy name '" + spec.name + "' (first declared at " + other.where + ")");
  check_listen_unique(spec);
  scenario_.proxies.push_back(std::move(spec));
  auto* ref = static_cast<ProxyRef*>(lua_newuserdatauv(L, sizeof(ProxyRef), 0));
  ref->index = scenario_.proxies.size() - 1;
  luaL_setmetatable(L, kProxyMeta);
}

// Two proxies on one port would fail at bind time; say so now, with both lines. A wildcard
// host (0.0.0.0, ::) takes the port on every address.
void ScenarioApi::check_listen_unique(const faults::ProxySpec& spec) const {
  const auto mine = *faults::parse_host_port(spec.listen, nullptr);
  if (mine.port == 0) return;
  auto wildcard = [](const std::string& host) { return host == "0.0.0.0" || host == "::"; };
  for (const auto& other : scenario_.proxies) {
    const auto theirs = *faults::parse_host_port(other.listen, nullptr);
    if (theirs.port != mine.port) continue;
    if (theirs.host == mine.host || wildcard(theirs.host) || wildcard(mine.host))
      throw ScriptError("proxy '" + spec.name + "': listen address " + spec.listen + " is already used by proxy '" +
                        other.name + "' (" + other.where + ")");
  }
}

faults::ProxySpec& ScenarioApi::checked_proxy(lua_State* L, const char* method) {
  auto* ref = static_cast<ProxyRef*>(luaL_testudata(L, 1, kProxyMeta));
  if (ref == nullptr)
    throw ScriptError(std::string(method) + ": call it on a proxy with a colon, p:" + method + " { ... }");
  return scenario_.proxies.at(ref->index);
}

int ScenarioApi::lua_toxic(lua_State* L) {
  faults::ProxySpec& proxy = self(L).checked_proxy(L, "toxic");
  TableFields fields(L, 2, "toxic", "{ type = ..., ... }");
  faults::ToxicSpec spec = read_toxic(L, fields);
  spec.where = where_at(L, 1);
  for (const auto& other : proxy.toxics)
    if (other.name == spec.name)
      throw ScriptError("toxic '" + spec.name + "': duplicate toxic name in proxy '" + proxy.name +
                        "' (first declared at " + other.where + "); give this one a name = ...");
  proxy.toxics.push_back(std::move(spec));
  return 0;
}

int ScenarioApi::lua_rule(lua_State* L) {
  ScenarioApi& api = self(L);
  faults::ProxySpec& proxy = api.checked_proxy(L, "rule");
  faults::RuleSpec spec = read_rule(L, 2, proxy);
  spec.where = where_at(L, 1);
  if (const faults::RuleSpec* other = api.find_rule(spec.name)) {
    lua_pushliteral(L, "name");
    const bool named = lua_rawget(L, 2) != LUA_TNIL;  // read_rule checked that argument 2 is a table
    lua_pop(L, 1);
    throw ScriptError("rule '" + spec.name + "': duplicate rule name (first declared at " + other->where + ")" +
                      (named ? "" : "; this is the default name, give the rule a name = ..."));
  }
  proxy.rules.push_back(std::move(spec));
  return 0;
}

int ScenarioApi::lua_expect(lua_State* L) {
  ScenarioApi& api = self(L);
  TableFields fields(L, 1, "expect", "{ rule = NAME, fired = N }");
  reject_unknown(fields, kExpectFields);
  faults::ExpectSpec spec;
  const bool names_toxic = read_expect_target(fields, spec);
  spec.target = names_toxic ? faults::ExpectSpec::Target::toxic : faults::ExpectSpec::Target::rule;
  read_expect_count(fields, spec);
  spec.where = where_at(L, 1);
  api.scenario_.expects.push_back(std::move(spec));
  api.expect_names_toxic_.push_back(names_toxic);
  return 0;
}

int ScenarioApi::lua_proxy_tostring(lua_State* L) {
  const faults::ProxySpec& proxy = self(L).checked_proxy(L, "__tostring");
  const std::string text = "proxy '" + proxy.name + "' (" + proxy.listen + " -> " + proxy.upstream + ")";
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

std::string ScenarioApi::finish() {
  finished_ = true;
  for (size_t i = 0; i < scenario_.expects.size(); ++i) {
    std::string error = check_expect(scenario_.expects[i], expect_names_toxic_[i]);
    if (!error.empty()) return scenario_.expects[i].where + ": " + error;
  }
  return "";
}

std::string ScenarioApi::check_expect(const faults::ExpectSpec& expect, bool names_toxic) const {
  const bool toxic_exists = has_toxic(expect.name);
  if (names_toxic) {
    if (toxic_exists) return "";
    const std::string names = toxic_names();
    return "expect: no toxic named '" + expect.name + "'" +
           (names.empty() ? " (the scenario declares no toxics)" : " (toxics: " + names + ")");
  }
  if (find_rule(expect.name) != nullptr) return "";
  if (toxic_exists)
    return "expect: no rule named '" + expect.name + "' (there is a toxic of that name: write toxic = \"" +
           expect.name + "\")";
  const std::string names = rule_names();
  return "expect: no rule named '" + expect.name + "'" +
         (names.empty() ? " (the scenario declares no rules)" : " (rules: " + names + ")");
}

const faults::RuleSpec* ScenarioApi::find_rule(const std::string& name) const {
  for (const auto& proxy : scenario_.proxies)
    for (const auto& rule : proxy.rules)
      if (rule.name == name) return &rule;
  return nullptr;
}

std::string ScenarioApi::rule_names() const {
  std::vector<std::string> names;
  for (const auto& proxy : scenario_.proxies)
    for (const auto& rule : proxy.rules) names.push_back(rule.name);
  return join(names);
}

bool ScenarioApi::has_toxic(const std::string& name) const {
  for (const auto& proxy : scenario_.proxies)
    for (const auto& toxic : proxy.toxics)
      if (toxic.name == name) return true;
  return false;
}

std::string ScenarioApi::toxic_names() const {
  std::vector<std::string> names;
  for (const auto& proxy : scenario_.proxies)
    for (const auto& toxic : proxy.toxics)
      if (!contains(names, toxic.name)) names.push_back(toxic.name);
  return join(names);
}

}  // namespace faultline::lua
