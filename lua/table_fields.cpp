// Field access for scenario tables: raw reads, strict types, messages that say what was wrong.
#include "lua/table_fields.h"

#include <algorithm>

#include "lua/lua_errors.h"

namespace faultline::lua {

std::string describe_value(lua_State* L, int index) {
  switch (lua_type(L, index)) {
    case LUA_TNUMBER: {
      lua_pushvalue(L, index);  // lua_tostring converts in place: work on a copy
      std::string text = lua_tostring(L, -1);
      lua_pop(L, 1);
      return text;
    }
    case LUA_TSTRING:
      return std::string("'") + lua_tostring(L, index) + "'";
    case LUA_TUSERDATA: {
      // Our values (matchers, actions, json.null, proxies) by what they are, not as "userdata".
      std::string name;
      const int type = luaL_getmetafield(L, index, "__name");  // pushes nothing when absent
      if (type != LUA_TNIL) {
        if (type == LUA_TSTRING) name = lua_tostring(L, -1);
        lua_pop(L, 1);
      }
      constexpr std::string_view ours = "faultline.";
      if (name.rfind(ours, 0) == 0) return name.substr(ours.size());
      return "userdata";
    }
    default:
      return luaL_typename(L, index);
  }
}

TableFields::TableFields(lua_State* L, int index, std::string label, const char* shape)
    : L_(L), index_(lua_absindex(L, index)), label_(std::move(label)) {
  if (lua_type(L_, index_) != LUA_TTABLE)
    fail(std::string("expected a table ") + shape + ", got " + describe_value(L_, index_));
  lua_pushnil(L_);
  while (lua_next(L_, index_) != 0) {
    if (lua_type(L_, -2) != LUA_TSTRING) {
      const std::string value = describe_value(L_, -1);
      lua_pop(L_, 2);
      fail("unexpected value " + value + " without a field name (write name = value)");
    }
    names_.emplace_back(lua_tostring(L_, -2));
    lua_pop(L_, 1);
  }
  std::sort(names_.begin(), names_.end());
}

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

void TableFields::reject_unknown(const std::vector<std::string>& known) const {
  for (const auto& name : names_)
    if (std::find(known.begin(), known.end(), name) == known.end())
      fail("unknown field '" + name + "' (valid fields: " + join(known) + ")");
}

bool TableFields::has(const std::string& name) const { return std::binary_search(names_.begin(), names_.end(), name); }

void TableFields::fail(const std::string& message) const { throw ScriptError(label_ + ": " + message); }

std::optional<bool> TableFields::boolean(const std::string& name) const {
  const int type = push(name);
  if (type == LUA_TNIL) {
    lua_pop(L_, 1);
    return std::nullopt;
  }
  if (type != LUA_TBOOLEAN) fail_type(name, "field", "true or false");
  const bool value = lua_toboolean(L_, -1) != 0;
  lua_pop(L_, 1);
  return value;
}

int TableFields::push(const std::string& name) const {
  lua_pushlstring(L_, name.data(), name.size());
  return lua_rawget(L_, index_);
}

void TableFields::fail_type(const std::string& name, const char* noun, const char* expected) const {
  const std::string got = describe_value(L_, -1);
  lua_pop(L_, 1);
  fail(std::string(noun) + " '" + name + "' must be " + expected + ", got " + got);
}

std::optional<std::string> TableFields::string(const std::string& name) const {
  const int type = push(name);
  if (type == LUA_TNIL) {
    lua_pop(L_, 1);
    return std::nullopt;
  }
  if (type != LUA_TSTRING) fail_type(name, "field", "a string");
  size_t len = 0;
  const char* text = lua_tolstring(L_, -1, &len);
  std::string value(text, len);
  lua_pop(L_, 1);
  return value;
}

std::optional<double> TableFields::number(const std::string& name) const {
  const int type = push(name);
  if (type == LUA_TNIL) {
    lua_pop(L_, 1);
    return std::nullopt;
  }
  if (type != LUA_TNUMBER) fail_type(name, "field", "a number");
  const double value = lua_tonumber(L_, -1);
  lua_pop(L_, 1);
  return value;
}

std::optional<int64_t> TableFields::integer(const std::string& name, const char* noun) const {
  const int type = push(name);
  if (type == LUA_TNIL) {
    lua_pop(L_, 1);
    return std::nullopt;
  }
  int is_integer = 0;
  const lua_Integer value = type == LUA_TNUMBER ? lua_tointegerx(L_, -1, &is_integer) : 0;
  if (is_integer == 0) fail_type(name, noun, "an integer");
  lua_pop(L_, 1);
  return value;
}

}  // namespace faultline::lua
