// Rule and key functions at run time: msg and ctx tables, a bounded protected call, results checked.
#include "lua/script_hooks.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "faults/decider.h"
#include "lua/actions.h"
#include "lua/json_values.h"
#include "lua/lua_errors.h"
#include "lua/table_fields.h"

namespace faultline::lua {

namespace {

constexpr const char* kStateKey = "faultline.ctx.state";  // registry: the one ctx.state table
constexpr const char* kRngMeta = "faultline.rng";
constexpr const char* kCtxMeta = "faultline.ctx";
constexpr const char* kMsgMeta = "faultline.msg";
char kGenerationKey;  // its address is the private key of the generation in msg's lazy tables and ctx

void set_string(lua_State* L, const char* name, const std::optional<std::string>& value) {
  if (!value) return;
  lua_pushlstring(L, value->data(), value->size());
  lua_setfield(L, -2, name);
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

}  // namespace

struct LuaScriptHooks::Call {
  LuaScriptHooks* self = nullptr;
  int function_ref = -1;
  const faults::Message* msg = nullptr;
  const CallContext* ctx = nullptr;  // null for a key function
  std::string rule;                  // the rule's name, for messages
  std::string where;                 // "path:LINE: " where the function was defined, or ""
};

LuaScriptHooks::LuaScriptHooks(std::unique_ptr<ScenarioApi> api, std::unique_ptr<Sandbox> sandbox,
                               const faults::Scenario& scenario)
    : api_(std::move(api)), sandbox_(std::move(sandbox)) {
  for (const auto& proxy : scenario.proxies)
    for (const auto& rule : proxy.rules) {
      if (rule.key.kind == faults::KeySpec::Kind::function) {
        key_rules_[rule.key.function_ref] = rule.name;
        where_[rule.key.function_ref] = function_where(rule.key.function_ref);
      }
      if (rule.action_function_ref >= 0) where_[rule.action_function_ref] = function_where(rule.action_function_ref);
    }
}

LuaScriptHooks::~LuaScriptHooks() {
  sandbox_.reset();  // before api_, which finalizers may still reach
}

// "path:LINE" of the function's definition: where a wrong return value is reported.
std::string LuaScriptHooks::function_where(int function_ref) {
  lua_State* L = sandbox_->state();
  const int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, function_ref);
  lua_Debug ar;
  if (lua_type(L, -1) != LUA_TFUNCTION || lua_getinfo(L, ">S", &ar) == 0) {  // ">" pops the function
    lua_settop(L, top);
    return "";
  }
  const std::string path = (ar.source != nullptr && ar.source[0] == '@') ? std::string(ar.source + 1) : ar.short_src;
  return path + ":" + std::to_string(ar.linedefined);
}

LuaScriptHooks::Call LuaScriptHooks::make_call(int function_ref, const faults::Message& msg, const std::string& rule) {
  Call call;
  call.self = this;
  call.function_ref = function_ref;
  call.msg = &msg;
  call.rule = rule;
  auto where = where_.find(function_ref);
  if (where != where_.end() && !where->second.empty()) call.where = where->second + ": ";
  return call;
}

std::optional<std::string> LuaScriptHooks::key(int function_ref, const faults::Message& msg, std::string* error) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto rule = key_rules_.find(function_ref);
  Call call = make_call(function_ref, msg, rule != key_rules_.end() ? rule->second : "?");
  const std::string failure = run(call);
  lua_State* L = sandbox_->state();
  std::optional<std::string> result;
  if (failure.empty() && lua_type(L, -1) == LUA_TSTRING) {
    size_t len = 0;
    const char* text = lua_tolstring(L, -1, &len);
    result.emplace(text, len);
  }
  lua_settop(L, 0);
  if (!failure.empty() && error != nullptr) *error = failure;
  return result;
}

std::optional<faults::ActionSpec> LuaScriptHooks::action(int function_ref, const faults::Message& msg,
                                                         const CallContext& ctx, std::string* error) {
  std::lock_guard<std::mutex> lock(mutex_);
  Call call = make_call(function_ref, msg, ctx.rule != nullptr ? ctx.rule->name : "?");
  call.ctx = &ctx;
  const std::string failure = run(call);
  lua_State* L = sandbox_->state();
  std::optional<faults::ActionSpec> result;
  if (failure.empty())
    if (const faults::ActionSpec* spec = to_action(L, -1)) result = *spec;
  lua_settop(L, 0);
  if (!failure.empty() && error != nullptr) *error = failure;
  return result;
}

// Everything that may allocate in Lua happens inside the protected call: an error outside one
// would end the process through Lua's panic handler.
std::string LuaScriptHooks::run(Call& call) {
  lua_State* L = sandbox_->state();
  lua_settop(L, 0);
  current_ = call.msg;
  current_call_ = &call;
  ++generation_;
  lua_pushcfunction(L, guarded<&LuaScriptHooks::trampoline>);
  lua_pushlightuserdata(L, &call);
  std::string failure = sandbox_->call(1, 1);
  current_ = nullptr;
  current_call_ = nullptr;
  return failure;
}

int LuaScriptHooks::trampoline(lua_State* L) {
  const Call& call = *static_cast<const Call*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  return call.self->invoke(L, call);
}

int LuaScriptHooks::invoke(lua_State* L, const Call& call) {
  luaL_checkstack(L, 8, "rule function call");
  lua_rawgeti(L, LUA_REGISTRYINDEX, call.function_ref);
  push_message(L, *call.msg);
  if (call.ctx != nullptr) {
    push_context(L, call);
    lua_call(L, 2, 1);
  } else {
    lua_call(L, 1, 1);
  }
  check_result(L, call);
  return 1;
}

void LuaScriptHooks::check_result(lua_State* L, const Call& call) {
  const std::string rule = call.where + "rule '" + call.rule + "': ";
  if (lua_isnil(L, -1)) return;
  if (call.ctx == nullptr) {
    if (lua_type(L, -1) == LUA_TSTRING) return;
    if (lua_type(L, -1) == LUA_TNUMBER) {
      lua_tostring(L, -1);  // a number key counts as its text
      return;
    }
    throw ScriptError(rule + "the key function must return a string or nil, got " + describe_value(L, -1));
  }
  std::string constructor;
  const faults::ActionSpec* action = to_action(L, -1, &constructor);
  if (action == nullptr)
    throw ScriptError(rule + "the action function must return an action (such as delay(100)) or nil, got " +
                      describe_value(L, -1));
  const auto protocol = action_protocol(action->type);
  if (protocol && *protocol != call.msg->protocol())
    throw ScriptError(rule + "the action function returned " + constructor + ", an action for " +
                      faults::to_string(*protocol) + " proxies; this rule's proxy is " +
                      faults::to_string(call.msg->protocol()));
}

// msg: the matcher fields (SPEC §2.1). header, query and json read the message on demand, so they
// work only while the call runs; everything else is a plain copy.
void LuaScriptHooks::push_message(lua_State* L, const faults::Message& msg) {
  lua_createtable(L, 0, 10);
  lua_pushstring(L, faults::to_string(msg.protocol()));
  lua_setfield(L, -2, "protocol");
  lua_pushinteger(L, static_cast<lua_Integer>(msg.connection()));
  lua_setfield(L, -2, "connection");
  switch (msg.protocol()) {
    case faults::Protocol::http:
      for (const char* name : {"method", "path", "host"}) set_string(L, name, msg.field(name));
      // header, query and json are made on first read (msg_index): most functions look at path or method.
      lua_pushlightuserdata(L, &kGenerationKey);
      lua_pushinteger(L, static_cast<lua_Integer>(generation_));
      lua_rawset(L, -3);
      if (luaL_getmetatable(L, kMsgMeta) != LUA_TTABLE) {
        lua_pop(L, 1);
        luaL_newmetatable(L, kMsgMeta);
        lua_pushlightuserdata(L, this);
        lua_pushcclosure(L, guarded<&LuaScriptHooks::msg_index>, 1);
        lua_setfield(L, -2, "__index");
      }
      lua_setmetatable(L, -2);
      break;
    case faults::Protocol::redis: {
      for (const char* name : {"command", "key"}) set_string(L, name, msg.field(name));
      const size_t count = msg.arg_count();
      lua_createtable(L, static_cast<int>(std::min<size_t>(count, 1024)), 0);
      for (size_t i = 1; i <= count; ++i) {
        const auto arg = msg.field("arg:" + std::to_string(i));
        if (!arg) break;
        lua_pushlstring(L, arg->data(), arg->size());
        lua_rawseti(L, -2, static_cast<lua_Integer>(i));
      }
      lua_setfield(L, -2, "args");
      break;
    }
    case faults::Protocol::postgres:
      for (const char* name : {"query", "message", "user", "database"}) set_string(L, name, msg.field(name));
      break;
    case faults::Protocol::tcp:
      break;
  }
}

// A table whose fields are read from the message on demand. It carries the call's generation under a private
// key, so a msg kept in ctx.state cannot read a later call's message; its metatable is made once per kind
// (rule functions run on every message: nothing per call that need not be).
void LuaScriptHooks::push_lazy(lua_State* L, const char* kind) {
  lua_createtable(L, 0, 1);
  lua_pushlightuserdata(L, &kGenerationKey);
  lua_pushinteger(L, static_cast<lua_Integer>(generation_));
  lua_rawset(L, -3);
  const std::string meta = std::string("faultline.lazy.") + kind;
  if (luaL_getmetatable(L, meta.c_str()) != LUA_TTABLE) {
    lua_pop(L, 1);
    luaL_newmetatable(L, meta.c_str());
    lua_pushlightuserdata(L, this);
    lua_pushstring(L, kind);
    lua_pushcclosure(L, guarded<&LuaScriptHooks::lazy_index>, 2);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, (std::string("msg.") + kind).c_str());
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, kind);
}

// __index of an http msg: header, query and json, each made on first read and then kept in msg. A msg kept
// from an earlier call gets tables that refuse to read (their generation is that msg's).
int LuaScriptHooks::msg_index(lua_State* L) {
  auto* self = static_cast<LuaScriptHooks*>(lua_touserdata(L, lua_upvalueindex(1)));
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const std::string field = lua_tostring(L, 2);
  if (field != "header" && field != "query" && field != "json") return 0;
  lua_pushlightuserdata(L, &kGenerationKey);
  lua_rawget(L, 1);
  const lua_Integer generation = lua_tointeger(L, -1);
  lua_pop(L, 1);
  struct Restore {  // push_lazy stamps the msg's own generation; the call's comes back however it ends
    uint64_t& slot;
    uint64_t saved;
    ~Restore() { slot = saved; }
  } restore{self->generation_, self->generation_};
  self->generation_ = static_cast<uint64_t>(generation);
  lua_settop(L, 1);
  self->push_lazy(L, field.c_str());  // sets msg[field]
  lua_getfield(L, 1, field.c_str());
  return 1;
}

// __index of msg.header / msg.query / msg.json.
int LuaScriptHooks::lazy_index(lua_State* L) {
  auto* self = static_cast<LuaScriptHooks*>(lua_touserdata(L, lua_upvalueindex(1)));
  const std::string kind = lua_tostring(L, lua_upvalueindex(2));
  lua_pushlightuserdata(L, &kGenerationKey);
  lua_rawget(L, 1);
  const auto generation = static_cast<uint64_t>(lua_tointeger(L, -1));
  lua_pop(L, 1);
  if (self->current_ == nullptr || generation != self->generation_)
    throw ScriptError("msg." + kind + " can be read only while the rule function runs (copy what you need)");
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const std::string name = lua_tostring(L, 2);
  if (kind == "json") {
    const nlohmann::json* value = self->current_->json_field(name);
    if (value == nullptr) return 0;
    push_json(L, *value);
    return 1;
  }
  const auto value = self->current_->field(kind + ":" + (kind == "header" ? lower(name) : name));
  if (!value) return 0;
  lua_pushlstring(L, value->data(), value->size());
  return 1;
}

// ctx: count, rule, key, random(), state, log(...).
void LuaScriptHooks::push_context(lua_State* L, const Call& call) {
  const CallContext& ctx = *call.ctx;
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, static_cast<lua_Integer>(ctx.count));
  lua_setfield(L, -2, "count");
  lua_pushlstring(L, call.rule.data(), call.rule.size());
  lua_setfield(L, -2, "rule");
  if (!ctx.key.empty()) {
    lua_pushlstring(L, ctx.key.data(), ctx.key.size());
    lua_setfield(L, -2, "key");
  }

  if (lua_getfield(L, LUA_REGISTRYINDEX, kStateKey) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, kStateKey);
  }
  lua_setfield(L, -2, "state");

  // random and log are made when first read: most rule functions use neither, and they run on every message.
  lua_pushlightuserdata(L, &kGenerationKey);
  lua_pushinteger(L, static_cast<lua_Integer>(generation_));
  lua_rawset(L, -3);
  if (luaL_getmetatable(L, kCtxMeta) != LUA_TTABLE) {
    lua_pop(L, 1);
    luaL_newmetatable(L, kCtxMeta);
    lua_pushlightuserdata(L, this);
    lua_pushcclosure(L, guarded<&LuaScriptHooks::ctx_index>, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
}

// ctx.random / ctx.log, on first read during the call; stored in ctx so later reads find them directly.
int LuaScriptHooks::ctx_index(lua_State* L) {
  auto* self = static_cast<LuaScriptHooks*>(lua_touserdata(L, lua_upvalueindex(1)));
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const std::string field = lua_tostring(L, 2);
  if (field != "random" && field != "log") return 0;
  lua_pushlightuserdata(L, &kGenerationKey);
  lua_rawget(L, 1);
  const auto generation = static_cast<uint64_t>(lua_tointeger(L, -1));
  lua_pop(L, 1);
  const Call* call = self->current_call_;
  if (call == nullptr || call->ctx == nullptr || generation != self->generation_)
    throw ScriptError("ctx." + field + " can be read only while the rule function runs");
  if (field == "random") {
    // The same draws for the same (seed, rule, key, count) on every run (SPEC §3).
    const CallContext& ctx = *call->ctx;
    const std::string& name = ctx.rule != nullptr ? ctx.rule->name : call->rule;
    void* memory = lua_newuserdatauv(L, sizeof(faults::Rng), 0);
    new (memory) faults::Rng(faults::decide(ctx.seed, name, ctx.key, ctx.count));
    if (luaL_newmetatable(L, kRngMeta) != 0) {
      lua_pushliteral(L, "rng");
      lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, guarded<&LuaScriptHooks::ctx_random>, 1);
  } else {
    lua_pushlstring(L, call->rule.data(), call->rule.size());
    lua_pushcclosure(L, guarded<&LuaScriptHooks::ctx_log>, 1);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

int LuaScriptHooks::ctx_random(lua_State* L) {
  auto* rng = static_cast<faults::Rng*>(lua_touserdata(L, lua_upvalueindex(1)));
  return push_random(L, *rng);
}

// ctx.log(...): one line on stderr, "[rule NAME] a<TAB>b", written at once so threads do not interleave.
int LuaScriptHooks::ctx_log(lua_State* L) {
  std::string line = std::string("[rule ") + lua_tostring(L, lua_upvalueindex(1)) + "] ";
  const int n = lua_gettop(L);
  for (int i = 1; i <= n; ++i) {
    size_t len = 0;
    const char* text = luaL_tolstring(L, i, &len);
    if (i > 1) line += '\t';
    line.append(text, len);
    lua_pop(L, 1);
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
  return 0;
}

}  // namespace faultline::lua
