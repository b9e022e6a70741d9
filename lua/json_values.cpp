// Converts between Lua values and nlohmann::json, with a null that survives inside Lua tables.
#include "lua/json_values.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "lua/lua_errors.h"
#include "lua/table_fields.h"

namespace faultline::lua {

namespace {

constexpr const char* kNullMeta = "faultline.json.null";
constexpr const char* kArrayMeta = "faultline.json.array";
constexpr const char* kObjectMeta = "faultline.json.object";
constexpr const char* kNullKey = "faultline.json.null.value";  // registry slot of the one null value
// Deep enough for any real body; a cycle (t.self = t) ends here instead of overflowing the C stack.
constexpr int kMaxDepth = 64;

int null_tostring(lua_State* L) {
  lua_pushliteral(L, "json.null");
  return 1;
}

bool has_meta(lua_State* L, int index, const char* meta) {
  if (lua_getmetatable(L, index) == 0) return false;
  luaL_getmetatable(L, meta);
  const bool same = lua_rawequal(L, -1, -2) != 0;
  lua_pop(L, 2);
  return same;
}

// json.array(t) / json.object(t): a protected metatable, so scripts can neither read nor replace it.
template <bool Array>
int mark_table(lua_State* L) {
  const char* meta = Array ? kArrayMeta : kObjectMeta;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  if (lua_type(L, 1) != LUA_TTABLE)
    throw ScriptError(std::string(Array ? "json.array" : "json.object") + ": expected a table, got " +
                      describe_value(L, 1));
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1) != 0) {
    lua_pop(L, 1);
    if (!has_meta(L, 1, kArrayMeta) && !has_meta(L, 1, kObjectMeta))
      throw ScriptError("json: the table already has a metatable");
  }
  luaL_setmetatable(L, meta);
  return 1;
}

int json_encode(lua_State* L) {
  luaL_checkany(L, 1);
  const std::string text = to_json(L, 1, "json.encode").dump();
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

void new_protected_meta(lua_State* L, const char* name) {
  luaL_newmetatable(L, name);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__metatable");
}

std::string key_text(lua_State* L, int index) {
  if (lua_type(L, index) == LUA_TSTRING) return lua_tostring(L, index);
  return describe_value(L, index);
}

class Encoder {
 public:
  Encoder(lua_State* L, std::string what) : L_(L), what_(std::move(what)) {}

  nlohmann::json value(int index, int depth) {
    index = lua_absindex(L_, index);
    switch (lua_type(L_, index)) {
      case LUA_TNIL:
        return nullptr;
      case LUA_TBOOLEAN:
        return lua_toboolean(L_, index) != 0;
      case LUA_TNUMBER:
        return number(index);
      case LUA_TSTRING: {
        size_t len = 0;
        const char* text = lua_tolstring(L_, index, &len);
        return std::string(text, len);
      }
      case LUA_TTABLE:
        return table(index, depth);
      case LUA_TUSERDATA:
        if (is_json_null(L_, index)) return nullptr;
        [[fallthrough]];
      default:
        fail(std::string("a ") + luaL_typename(L_, index) + " cannot be sent as JSON");
    }
  }

 private:
  [[noreturn]] void fail(const std::string& message) const { throw ScriptError(what_ + ": " + message); }

  nlohmann::json number(int index) const {
    if (lua_isinteger(L_, index)) return static_cast<int64_t>(lua_tointeger(L_, index));
    const double n = lua_tonumber(L_, index);
    if (!std::isfinite(n)) fail("JSON has no " + describe_value(L_, index));
    return n;
  }

  nlohmann::json table(int index, int depth) {
    if (depth >= kMaxDepth) fail("tables nested more than 64 deep (a table that contains itself?)");
    const bool force_array = has_meta(L_, index, kArrayMeta);
    const bool force_object = has_meta(L_, index, kObjectMeta);
    lua_Integer count = 0;
    lua_Integer max_index = 0;
    bool list_keys = true;
    bool string_keys = true;
    lua_pushnil(L_);
    while (lua_next(L_, index) != 0) {
      lua_pop(L_, 1);
      ++count;
      if (lua_type(L_, -1) != LUA_TSTRING) string_keys = false;
      if (lua_isinteger(L_, -1) && lua_tointeger(L_, -1) >= 1)
        max_index = std::max(max_index, lua_tointeger(L_, -1));
      else
        list_keys = false;
    }
    if (list_keys && max_index != count)
      fail("a list with a hole (item " + std::to_string(max_index) + " of " + std::to_string(count) +
           "); write json.null for a missing item");
    if (force_array || (list_keys && count > 0 && !force_object)) {
      if (!list_keys) fail("a table marked json.array has named fields");
      nlohmann::json out = nlohmann::json::array();
      for (lua_Integer i = 1; i <= count; ++i) {
        lua_rawgeti(L_, index, i);
        out.push_back(value(-1, depth + 1));
        lua_pop(L_, 1);
      }
      return out;
    }
    if (!string_keys) {
      lua_pushnil(L_);
      while (lua_next(L_, index) != 0) {
        lua_pop(L_, 1);
        if (lua_type(L_, -1) != LUA_TSTRING) {
          const std::string key = key_text(L_, -1);
          lua_pop(L_, 1);
          fail("a table mixes list items and named fields (key " + key + "); JSON objects take string keys only");
        }
      }
    }
    nlohmann::json out = nlohmann::json::object();  // std::map underneath: keys come out sorted
    lua_pushnil(L_);
    while (lua_next(L_, index) != 0) {
      const std::string key = lua_tostring(L_, -2);
      out[key] = value(-1, depth + 1);
      lua_pop(L_, 1);
    }
    return out;
  }

  lua_State* L_;
  std::string what_;
};

}  // namespace

void install_json(lua_State* L) {
  new_protected_meta(L, kNullMeta);
  lua_pushcfunction(L, null_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  new_protected_meta(L, kArrayMeta);
  lua_pop(L, 1);
  new_protected_meta(L, kObjectMeta);
  lua_pop(L, 1);

  lua_newuserdatauv(L, 0, 0);
  luaL_setmetatable(L, kNullMeta);
  lua_setfield(L, LUA_REGISTRYINDEX, kNullKey);

  lua_createtable(L, 0, 4);
  push_json_null(L);
  lua_setfield(L, -2, "null");
  lua_pushcfunction(L, guarded<mark_table<true>>);
  lua_setfield(L, -2, "array");
  lua_pushcfunction(L, guarded<mark_table<false>>);
  lua_setfield(L, -2, "object");
  lua_pushcfunction(L, guarded<json_encode>);
  lua_setfield(L, -2, "encode");
  lua_setglobal(L, "json");
}

void push_json_null(lua_State* L) { lua_getfield(L, LUA_REGISTRYINDEX, kNullKey); }

bool is_json_null(lua_State* L, int index) { return luaL_testudata(L, index, kNullMeta) != nullptr; }

nlohmann::json to_json(lua_State* L, int index, const std::string& what) {
  luaL_checkstack(L, 2 * kMaxDepth + 8, "JSON nesting");
  return Encoder(L, what).value(index, 0);
}

void push_json(lua_State* L, const nlohmann::json& value) {
  luaL_checkstack(L, 4, "JSON nesting");
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      push_json_null(L);
      return;
    case nlohmann::json::value_t::boolean:
      lua_pushboolean(L, value.get<bool>() ? 1 : 0);
      return;
    case nlohmann::json::value_t::number_integer:
      lua_pushinteger(L, value.get<int64_t>());
      return;
    case nlohmann::json::value_t::number_unsigned: {
      const auto n = value.get<uint64_t>();
      if (n <= static_cast<uint64_t>(LUA_MAXINTEGER))
        lua_pushinteger(L, static_cast<lua_Integer>(n));
      else
        lua_pushnumber(L, static_cast<double>(n));
      return;
    }
    case nlohmann::json::value_t::number_float:
      lua_pushnumber(L, value.get<double>());
      return;
    case nlohmann::json::value_t::string: {
      const auto& text = value.get_ref<const std::string&>();
      lua_pushlstring(L, text.data(), text.size());
      return;
    }
    case nlohmann::json::value_t::array: {
      lua_createtable(L, static_cast<int>(value.size()), 0);
      lua_Integer i = 0;
      for (const auto& item : value) {
        push_json(L, item);
        lua_rawseti(L, -2, ++i);
      }
      if (value.empty()) luaL_setmetatable(L, kArrayMeta);
      return;
    }
    case nlohmann::json::value_t::object:
      lua_createtable(L, 0, static_cast<int>(value.size()));
      for (const auto& [key, item] : value.items()) {
        lua_pushlstring(L, key.data(), key.size());
        push_json(L, item);
        lua_rawset(L, -3);
      }
      return;
    default:  // binary, discarded: not produced by the JSON parser
      lua_pushnil(L);
      return;
  }
}

}  // namespace faultline::lua
