// The action constructors: each checks its arguments and returns a userdata holding an ActionSpec.
#include "lua/actions.h"

#include <algorithm>
#include <cctype>
#include <new>

#include "lua/json_values.h"
#include "lua/lua_errors.h"
#include "lua/table_fields.h"

namespace faultline::lua {

namespace {

using Type = faults::ActionSpec::Type;

constexpr const char* kActionMeta = "faultline.action";
constexpr const char* kConstructorsKey = "faultline.action.constructors";  // registry: function -> name
constexpr int kMaxReplyDepth = 32;

struct ActionValue {
  faults::ActionSpec spec;
  std::string constructor;
};

ActionValue* to_value(lua_State* L, int index) {
  return static_cast<ActionValue*>(luaL_testudata(L, index, kActionMeta));
}

int push_action(lua_State* L, faults::ActionSpec spec, const char* constructor) {
  ActionValue value{std::move(spec), constructor};
  void* memory = lua_newuserdatauv(L, sizeof(ActionValue), 0);
  new (memory) ActionValue(std::move(value));
  luaL_setmetatable(L, kActionMeta);
  return 1;
}

int action_gc(lua_State* L) {
  if (auto* value = to_value(L, 1)) value->~ActionValue();
  return 0;
}

int action_tostring(lua_State* L) {
  const ActionValue& value = *to_value(L, 1);
  std::string text = "action " + value.constructor;
  if (value.spec.type == Type::respond) text += "(" + std::to_string(value.spec.status) + ")";
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

std::string got(lua_State* L, int index) { return lua_isnone(L, index) ? "nothing" : describe_value(L, index); }

void no_arguments(lua_State* L, const char* name) {
  if (lua_gettop(L) != 0) throw ScriptError(std::string(name) + ": takes no arguments, got " + describe_value(L, 1));
}

// An integer option of a table argument, at least `min`; nullopt when absent and not required.
std::optional<int64_t> option(const TableFields& fields, const char* name, int64_t min, bool required) {
  const auto value = fields.integer(name);
  if (!value) {
    if (required) fields.fail(std::string("missing field '") + name + "'");
    return std::nullopt;
  }
  if (*value < min)
    fields.fail(std::string(name) + " must be an integer >= " + std::to_string(min) + ", got " +
                std::to_string(*value));
  return value;
}

// `name(N)` or `name { key = N, ... }` for actions whose main argument is one integer; `fields`
// receives the table when that form was used.
int64_t integer_or_table(lua_State* L, const char* name, const char* key, const std::vector<std::string>& known,
                         std::optional<TableFields>& fields) {
  if (lua_gettop(L) > 1)
    throw ScriptError(std::string(name) + ": expected one argument, got " + std::to_string(lua_gettop(L)));
  if (lua_type(L, 1) == LUA_TNUMBER) {
    int is_integer = 0;
    const lua_Integer value = lua_tointegerx(L, 1, &is_integer);
    if (is_integer == 0 || value < 0)
      throw ScriptError(std::string(name) + ": " + key + " must be an integer >= 0, got " + describe_value(L, 1));
    return value;
  }
  if (lua_type(L, 1) != LUA_TTABLE)
    throw ScriptError(std::string(name) + ": expected " + name + "(" + key + ") or " + name + " { " + key +
                      " = N }, got " + got(L, 1));
  fields.emplace(L, 1, name, "");
  fields->reject_unknown(known);
  return *option(*fields, key, 0, true);
}

// t[name] without metamethods.
int raw_field(lua_State* L, int table, const char* name) {
  table = lua_absindex(L, table);
  lua_pushstring(L, name);
  return lua_rawget(L, table);
}

// A table argument (required), e.g. http.truncate { bytes = N }.
TableFields table_argument(lua_State* L, const char* name, const char* shape, const std::vector<std::string>& known) {
  if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TTABLE)
    throw ScriptError(std::string(name) + ": expected a table " + shape + ", got " + got(L, 1));
  TableFields fields(L, 1, name, shape);
  fields.reject_unknown(known);
  return fields;
}

// --- generic ---

int lua_delay(lua_State* L) {
  std::optional<TableFields> fields;
  faults::ActionSpec spec;
  spec.type = Type::delay;
  spec.ms = integer_or_table(L, "delay", "ms", {"jitter", "ms"}, fields);
  if (fields) spec.jitter = option(*fields, "jitter", 0, false).value_or(0);
  return push_action(L, std::move(spec), "delay");
}

// `name()` or `name { ... }`: nullopt for no argument, else the table's fields (unknown ones refused).
std::optional<TableFields> optional_table(lua_State* L, const char* name, const char* shape,
                                          const std::vector<std::string>& known) {
  if (lua_gettop(L) == 0) return std::nullopt;
  if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TTABLE)
    throw ScriptError(std::string(name) + ": expected " + name + "() or " + name + " " + shape + ", got " + got(L, 1));
  TableFields fields(L, 1, name, shape);
  fields.reject_unknown(known);
  return fields;
}

int lua_hang(lua_State* L) {
  faults::ActionSpec spec;
  spec.type = Type::hang;
  if (auto fields = optional_table(L, "hang", "{ ms = N }", {"ms"}))
    spec.ms = option(*fields, "ms", 1, false).value_or(0);
  return push_action(L, std::move(spec), "hang");
}

int lua_drop(lua_State* L) {
  faults::ActionSpec spec;
  spec.type = Type::drop;
  if (auto fields = optional_table(L, "drop", "{ after_forward = true }", {"after_forward"})) {
    raw_field(L, 1, "after_forward");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
      fields->fail("after_forward must be true or false, got " + describe_value(L, -1));
    spec.after_forward = lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);
  }
  return push_action(L, std::move(spec), "drop");
}

int lua_reset(lua_State* L) {
  no_arguments(L, "reset");
  faults::ActionSpec spec;
  spec.type = Type::reset;
  return push_action(L, std::move(spec), "reset");
}

int lua_pass(lua_State* L) {
  no_arguments(L, "pass");
  return push_action(L, faults::ActionSpec{}, "pass");
}

// --- http ---

// RFC 9110 token characters: what a header name may hold.
bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string header_text(lua_State* L, int index, const std::string& what) {
  if (lua_type(L, index) == LUA_TNUMBER) {
    lua_pushvalue(L, index);
    std::string text = lua_tostring(L, -1);
    lua_pop(L, 1);
    return text;
  }
  if (lua_type(L, index) != LUA_TSTRING)
    throw ScriptError("http.respond: " + what + " must be a string, got " + describe_value(L, index));
  size_t len = 0;
  const char* text = lua_tolstring(L, index, &len);
  return std::string(text, len);
}

void add_header(std::vector<std::pair<std::string, std::string>>& headers, std::string name, std::string value) {
  if (!valid_header_name(name)) throw ScriptError("http.respond: bad header name '" + name + "'");
  // A CR or LF would let a value start a header or a body of its own.
  if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
    throw ScriptError("http.respond: header '" + name + "' has a CR, LF or NUL in its value");
  headers.emplace_back(std::move(name), std::move(value));
}

// headers = { ["x-a"] = "1", ... } (sent sorted by name) or { { "x-a", "1" }, ... } (sent in order).
std::vector<std::pair<std::string, std::string>> read_headers(lua_State* L, int index) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (lua_type(L, index) != LUA_TTABLE)
    throw ScriptError("http.respond: headers must be a table, got " + describe_value(L, index));
  const auto count = static_cast<lua_Integer>(lua_rawlen(L, index));
  if (count > 0) {
    for (lua_Integer i = 1; i <= count; ++i) {
      lua_rawgeti(L, index, i);
      const std::string what = "headers[" + std::to_string(i) + "]";
      if (lua_type(L, -1) != LUA_TTABLE || lua_rawlen(L, -1) != 2)
        throw ScriptError("http.respond: " + what + " must be a pair { \"name\", \"value\" }, got " +
                          describe_value(L, -1));
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      std::string name = header_text(L, -2, what + " name");
      std::string value = header_text(L, -1, what + " value");
      lua_pop(L, 3);
      add_header(headers, std::move(name), std::move(value));
    }
    lua_Integer entries = 0;
    lua_pushnil(L);
    while (lua_next(L, index) != 0) {
      lua_pop(L, 1);
      ++entries;
    }
    if (entries != count)
      throw ScriptError("http.respond: headers mixes { name, value } pairs and name = value fields; use one form");
    return headers;
  }
  TableFields fields(L, index, "http.respond", "");
  for (const auto& name : fields.names()) {
    raw_field(L, index, name.c_str());
    std::string value = header_text(L, -1, "header '" + name + "'");
    lua_pop(L, 1);
    add_header(headers, name, std::move(value));
  }
  return headers;
}

int read_status(lua_State* L) {
  int is_integer = 0;
  const lua_Integer status = lua_type(L, 1) == LUA_TNUMBER ? lua_tointegerx(L, 1, &is_integer) : 0;
  if (is_integer == 0 || status < 100 || status > 599)
    throw ScriptError("http.respond: status must be an integer from 100 to 599, got " + got(L, 1));
  return static_cast<int>(status);
}

int lua_http_respond(lua_State* L) {
  if (lua_gettop(L) > 2)
    throw ScriptError("http.respond: expected (status, { headers = ..., body = ... | json = ... })");
  faults::ActionSpec spec;
  spec.type = Type::respond;
  spec.status = read_status(L);
  if (lua_isnoneornil(L, 2)) return push_action(L, std::move(spec), "http.respond");
  if (lua_type(L, 2) != LUA_TTABLE)
    throw ScriptError(
        "http.respond: the second argument must be a table { headers = ..., body = ... | json = ... }, got " +
        describe_value(L, 2));
  TableFields fields(L, 2, "http.respond", "");
  fields.reject_unknown({"body", "headers", "json"});
  if (fields.has("headers")) {
    raw_field(L, 2, "headers");
    spec.headers = read_headers(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  if (fields.has("body") && fields.has("json")) fields.fail("give either body or json, not both");
  if (const auto body = fields.string("body")) spec.body = *body;
  if (fields.has("json")) {
    raw_field(L, 2, "json");
    spec.body = to_json(L, -1, "http.respond: json").dump();
    lua_pop(L, 1);
    const bool typed = std::any_of(spec.headers.begin(), spec.headers.end(),
                                   [](const auto& h) { return equals_ignoring_case(h.first, "content-type"); });
    if (!typed) spec.headers.emplace_back("content-type", "application/json");
  }
  return push_action(L, std::move(spec), "http.respond");
}

// Actions whose one argument is { FIELD = N }: a descriptor each, one constructor for all.
struct IntegerAction {
  const char* full;
  const char* usage;
  const char* field;
  int64_t min;
  Type type;
  int64_t faults::ActionSpec::*member;
};
constexpr IntegerAction kTruncate{"http.truncate", "{ bytes = N }",           "bytes", 0,
                                  Type::truncate,  &faults::ActionSpec::bytes};
constexpr IntegerAction kSseCut{"http.sse_cut", "{ after_events = N }",           "after_events", 0,
                                Type::sse_cut,  &faults::ActionSpec::after_events};
constexpr IntegerAction kSseDelay{"http.sse_delay", "{ ms = N }", "ms", 0, Type::sse_delay, &faults::ActionSpec::ms};
constexpr IntegerAction kThrottle{"http.throttle", "{ bytes_per_second = N }",           "bytes_per_second", 1,
                                  Type::throttle,  &faults::ActionSpec::bytes_per_second};

template <const IntegerAction& A>
int lua_integer_action(lua_State* L) {
  TableFields fields = table_argument(L, A.full, A.usage, {A.field});
  faults::ActionSpec spec;
  spec.type = A.type;
  spec.*A.member = *option(fields, A.field, A.min, true);
  return push_action(L, std::move(spec), A.full);
}

int lua_http_delay_response(lua_State* L) {
  std::optional<TableFields> fields;
  faults::ActionSpec spec;
  spec.type = Type::delay_response;
  spec.ms = integer_or_table(L, "http.delay_response", "ms", {"ms"}, fields);
  return push_action(L, std::move(spec), "http.delay_response");
}

// --- redis ---

int lua_redis_error(lua_State* L) {
  if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TSTRING)
    throw ScriptError("redis.error: expected one string \"PREFIX message\", got " + got(L, 1));
  faults::ActionSpec spec;
  spec.type = Type::redis_error;
  size_t len = 0;
  const char* text = lua_tolstring(L, 1, &len);
  spec.message.assign(text, len);
  if (spec.message.empty())
    throw ScriptError("redis.error: the message is empty (write e.g. \"ERR something failed\")");
  if (spec.message.find_first_of(std::string_view("\r\n", 2)) != std::string::npos)
    throw ScriptError("redis.error: the message may not contain CR or LF (RESP errors are one line)");
  return push_action(L, std::move(spec), "redis.error");
}

// RESP2 replies: nil, integers, bulk strings and arrays of them.
nlohmann::json reply_value(lua_State* L, int index, int depth) {
  index = lua_absindex(L, index);
  switch (lua_type(L, index)) {
    case LUA_TNONE:
    case LUA_TNIL:
      return nullptr;
    case LUA_TNUMBER: {
      int is_integer = 0;
      const lua_Integer n = lua_tointegerx(L, index, &is_integer);
      if (is_integer == 0)
        throw ScriptError("redis.reply: " + describe_value(L, index) +
                          " is not an integer (RESP has no floats; send a string such as \"1.5\")");
      return static_cast<int64_t>(n);
    }
    case LUA_TSTRING: {
      size_t len = 0;
      const char* text = lua_tolstring(L, index, &len);
      return std::string(text, len);
    }
    case LUA_TTABLE: {
      if (depth >= kMaxReplyDepth) throw ScriptError("redis.reply: lists nested more than 32 deep");
      const auto count = static_cast<lua_Integer>(lua_rawlen(L, index));
      lua_Integer entries = 0;
      lua_pushnil(L);
      while (lua_next(L, index) != 0) {
        lua_pop(L, 1);
        ++entries;
      }
      if (entries != count)
        throw ScriptError(
            "redis.reply: a list must be a plain sequence { a, b, ... } (write redis.null for a nil item)");
      nlohmann::json out = nlohmann::json::array();
      for (lua_Integer i = 1; i <= count; ++i) {
        lua_rawgeti(L, index, i);
        out.push_back(reply_value(L, -1, depth + 1));
        lua_pop(L, 1);
      }
      return out;
    }
    case LUA_TUSERDATA:
      if (is_json_null(L, index)) return nullptr;
      [[fallthrough]];
    default:
      throw ScriptError(std::string("redis.reply: a ") + luaL_typename(L, index) +
                        " cannot be a reply (use nil, an integer, a string or a list of them)");
  }
}

int lua_redis_reply(lua_State* L) {
  if (lua_gettop(L) > 1) throw ScriptError("redis.reply: expected one value (nil, an integer, a string or a list)");
  luaL_checkstack(L, 2 * kMaxReplyDepth + 8, "reply nesting");
  faults::ActionSpec spec;
  spec.type = Type::redis_reply;
  spec.value = reply_value(L, 1, 0);
  return push_action(L, std::move(spec), "redis.reply");
}

// --- postgres ---

void read_sqlstate(const TableFields& fields, faults::ActionSpec& spec, const char* fallback) {
  const auto sqlstate = fields.string("sqlstate");
  if (!sqlstate && fallback == nullptr) fields.fail("missing field 'sqlstate' (five characters, e.g. \"40001\")");
  spec.sqlstate = sqlstate ? *sqlstate : fallback;
  const bool valid = spec.sqlstate.size() == 5 && std::all_of(spec.sqlstate.begin(), spec.sqlstate.end(), [](char c) {
                       return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
                     });
  if (!valid) fields.fail("sqlstate must be five characters 0-9 or A-Z (e.g. \"40001\"), got '" + spec.sqlstate + "'");
}

void read_pg_message(const TableFields& fields, faults::ActionSpec& spec, const char* fallback) {
  const auto message = fields.string("message");
  if (!message && fallback == nullptr) fields.fail("missing field 'message'");
  spec.message = message ? *message : fallback;
  // The wire format ends fields with NUL.
  if (spec.message.find('\0') != std::string::npos) fields.fail("message may not contain a NUL byte");
}

int lua_postgres_error(lua_State* L) {
  TableFields fields = table_argument(L, "postgres.error", "{ sqlstate = \"40001\", message = \"...\" }",
                                      {"message", "severity", "sqlstate"});
  faults::ActionSpec spec;
  spec.type = Type::postgres_error;
  read_sqlstate(fields, spec, nullptr);
  read_pg_message(fields, spec, nullptr);
  if (const auto severity = fields.string("severity")) {
    // The connection lives on after this error; FATAL (which closes it) is postgres.fatal.
    if (*severity != "ERROR")
      fields.fail("severity must be \"ERROR\", got '" + *severity + "' (for FATAL use postgres.fatal)");
  }
  spec.severity = "ERROR";
  return push_action(L, std::move(spec), "postgres.error");
}

int lua_postgres_fatal(lua_State* L) {
  faults::ActionSpec spec;
  spec.type = Type::postgres_fatal;
  spec.severity = "FATAL";
  if (lua_gettop(L) == 0) lua_newtable(L);
  TableFields fields =
      table_argument(L, "postgres.fatal", "{ sqlstate = \"57P01\", message = \"...\" }", {"message", "sqlstate"});
  // What a server shut down by pg_ctl stop -m fast says to its clients.
  read_sqlstate(fields, spec, "57P01");
  read_pg_message(fields, spec, "terminating connection due to administrator command");
  return push_action(L, std::move(spec), "postgres.fatal");
}

struct Constructor {
  const char* name;  // the Lua field
  const char* full;  // how messages name it
  lua_CFunction fn;
};

void register_one(lua_State* L, int function_index, const char* full) {
  function_index = lua_absindex(L, function_index);
  lua_getfield(L, LUA_REGISTRYINDEX, kConstructorsKey);
  lua_pushvalue(L, function_index);
  lua_pushstring(L, full);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

void set_constructors(lua_State* L, int table, const std::vector<Constructor>& list) {
  table = lua_absindex(L, table);
  for (const auto& c : list) {
    lua_pushcfunction(L, c.fn);
    register_one(L, -1, c.full);
    lua_setfield(L, table, c.name);
  }
}

}  // namespace

void install_actions(lua_State* L) {
  luaL_newmetatable(L, kActionMeta);
  lua_pushcfunction(L, action_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, guarded<action_tostring>);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "action");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, kConstructorsKey);

  lua_pushglobaltable(L);
  set_constructors(L, -1,
                   {{"delay", "delay", guarded<lua_delay>},
                    {"hang", "hang", guarded<lua_hang>},
                    {"drop", "drop", guarded<lua_drop>},
                    {"reset", "reset", guarded<lua_reset>},
                    {"pass", "pass", guarded<lua_pass>}});
  lua_pop(L, 1);

  lua_createtable(L, 0, 6);
  set_constructors(L, -1,
                   {{"respond", "http.respond", guarded<lua_http_respond>},
                    {"truncate", kTruncate.full, guarded<lua_integer_action<kTruncate>>},
                    {"sse_cut", kSseCut.full, guarded<lua_integer_action<kSseCut>>},
                    {"sse_delay", kSseDelay.full, guarded<lua_integer_action<kSseDelay>>},
                    {"throttle", kThrottle.full, guarded<lua_integer_action<kThrottle>>},
                    {"delay_response", "http.delay_response", guarded<lua_http_delay_response>}});
  lua_setglobal(L, "http");

  lua_createtable(L, 0, 3);
  set_constructors(
      L, -1, {{"error", "redis.error", guarded<lua_redis_error>}, {"reply", "redis.reply", guarded<lua_redis_reply>}});
  push_json_null(L);
  lua_setfield(L, -2, "null");
  lua_setglobal(L, "redis");

  lua_createtable(L, 0, 2);
  set_constructors(L, -1,
                   {{"error", "postgres.error", guarded<lua_postgres_error>},
                    {"fatal", "postgres.fatal", guarded<lua_postgres_fatal>}});
  lua_setglobal(L, "postgres");
}

void register_constructors(lua_State* L, const char* table) {
  if (lua_getglobal(L, table) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION) {
      const std::string full = std::string(table) + "." + lua_tostring(L, -2);
      register_one(L, -1, full.c_str());
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

const faults::ActionSpec* to_action(lua_State* L, int index, std::string* constructor) {
  const ActionValue* value = to_value(L, index);
  if (value == nullptr) return nullptr;
  if (constructor != nullptr) *constructor = value->constructor;
  return &value->spec;
}

std::string constructor_name(lua_State* L, int index) {
  if (lua_type(L, index) != LUA_TFUNCTION) return "";
  index = lua_absindex(L, index);
  lua_getfield(L, LUA_REGISTRYINDEX, kConstructorsKey);
  lua_pushvalue(L, index);
  lua_rawget(L, -2);
  std::string name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
  lua_pop(L, 2);
  return name;
}

std::optional<faults::Protocol> action_protocol(faults::ActionSpec::Type type) {
  switch (type) {
    case Type::respond:
    case Type::truncate:
    case Type::sse_cut:
    case Type::sse_delay:
    case Type::throttle:
    case Type::delay_response:
      return faults::Protocol::http;
    case Type::redis_error:
    case Type::redis_reply:
      return faults::Protocol::redis;
    case Type::postgres_error:
    case Type::postgres_fatal:
      return faults::Protocol::postgres;
    default:
      return std::nullopt;
  }
}

std::string check_action_protocol(const faults::ActionSpec& action, const std::string& constructor,
                                  const faults::ProxySpec& proxy) {
  const auto protocol = action_protocol(action.type);
  if (!protocol || *protocol == proxy.protocol) return "";
  return "action " + constructor + " is for " + faults::to_string(*protocol) + " proxies; proxy '" + proxy.name +
         "' is " + faults::to_string(proxy.protocol);
}

}  // namespace faultline::lua
