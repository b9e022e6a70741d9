// prefix, pattern and any_of: userdata holding a faults::StringMatcher, checked when written.
#include "lua/matchers.h"

#include <new>

#include "faults/lua_pattern.h"
#include "lua/lua_errors.h"
#include "lua/table_fields.h"

namespace faultline::lua {

namespace {

constexpr const char* kMatcherMeta = "faultline.matcher";

faults::StringMatcher* to_matcher(lua_State* L, int index) {
  return static_cast<faults::StringMatcher*>(luaL_testudata(L, index, kMatcherMeta));
}

void push_matcher(lua_State* L, faults::StringMatcher matcher) {
  void* memory = lua_newuserdatauv(L, sizeof(faults::StringMatcher), 0);
  new (memory) faults::StringMatcher(std::move(matcher));
  luaL_setmetatable(L, kMatcherMeta);
}

int matcher_gc(lua_State* L) {
  if (auto* matcher = to_matcher(L, 1)) matcher->~StringMatcher();
  return 0;
}

int matcher_tostring(lua_State* L) {
  const std::string text = describe_matcher(*to_matcher(L, 1));
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

std::string string_argument(lua_State* L, const char* function) {
  if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TSTRING)
    throw ScriptError(std::string(function) + ": expected one string, got " +
                      (lua_gettop(L) == 0 ? std::string("nothing") : describe_value(L, 1)));
  size_t len = 0;
  const char* text = lua_tolstring(L, 1, &len);
  return std::string(text, len);
}

int lua_prefix(lua_State* L) {
  faults::StringMatcher matcher;
  matcher.kind = faults::StringMatcher::Kind::prefix;
  matcher.text = string_argument(L, "prefix");
  push_matcher(L, std::move(matcher));
  return 1;
}

int lua_pattern(lua_State* L) {
  faults::StringMatcher matcher;
  matcher.kind = faults::StringMatcher::Kind::pattern;
  matcher.text = string_argument(L, "pattern");
  std::string why;
  if (!faults::lua_pattern_check(matcher.text, &why))
    throw ScriptError("pattern: malformed pattern '" + matcher.text + "': " + why);
  push_matcher(L, std::move(matcher));
  return 1;
}

// any_of { "a", prefix "b", 3 }: integers are allowed for fields such as connection.
int lua_any_of(lua_State* L) {
  if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TTABLE)
    throw ScriptError("any_of: expected a list { \"a\", prefix \"b\", ... }, got " +
                      (lua_gettop(L) == 0 ? std::string("nothing") : describe_value(L, 1)));
  const auto count = static_cast<lua_Integer>(lua_rawlen(L, 1));
  lua_Integer entries = 0;
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    lua_pop(L, 1);
    ++entries;
  }
  if (count == 0) throw ScriptError("any_of: the list is empty (it would match nothing)");
  if (entries != count) throw ScriptError("any_of: expected a plain list { \"a\", \"b\", ... } without named fields");
  faults::StringMatcher matcher;
  matcher.kind = faults::StringMatcher::Kind::any_of;
  for (lua_Integer i = 1; i <= count; ++i) {
    lua_rawgeti(L, 1, i);
    const std::string what = "any_of: item " + std::to_string(i);
    if (lua_isinteger(L, -1)) {
      faults::StringMatcher exact;
      exact.text = std::to_string(lua_tointeger(L, -1));
      matcher.any.push_back(std::move(exact));
    } else {
      matcher.any.push_back(read_matcher(L, -1, what));
    }
    lua_pop(L, 1);
  }
  push_matcher(L, std::move(matcher));
  return 1;
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

void install_matchers(lua_State* L) {
  luaL_newmetatable(L, kMatcherMeta);
  lua_pushcfunction(L, matcher_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, guarded<matcher_tostring>);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "matcher");
  lua_setfield(L, -2, "__metatable");  // getmetatable() gives this string, not the table
  lua_pop(L, 1);
  lua_register(L, "prefix", guarded<lua_prefix>);
  lua_register(L, "pattern", guarded<lua_pattern>);
  lua_register(L, "any_of", guarded<lua_any_of>);
}

bool is_matcher(lua_State* L, int index) { return to_matcher(L, index) != nullptr; }

faults::StringMatcher read_matcher(lua_State* L, int index, const std::string& what) {
  if (lua_type(L, index) == LUA_TSTRING) {
    faults::StringMatcher exact;
    size_t len = 0;
    const char* text = lua_tolstring(L, index, &len);
    exact.text.assign(text, len);
    return exact;
  }
  if (const auto* matcher = to_matcher(L, index)) return *matcher;
  throw ScriptError(what + " must be a string or a matcher (prefix \"...\", pattern \"...\", any_of { ... }), got " +
                    describe_value(L, index));
}

void make_case_insensitive(faults::StringMatcher& m) {
  m.case_insensitive = true;
  for (auto& inner : m.any) make_case_insensitive(inner);
}

std::string describe_matcher(const faults::StringMatcher& m) {
  switch (m.kind) {
    case faults::StringMatcher::Kind::exact:
      return quoted(m.text);
    case faults::StringMatcher::Kind::prefix:
      return "prefix " + quoted(m.text);
    case faults::StringMatcher::Kind::pattern:
      return "pattern " + quoted(m.text);
    case faults::StringMatcher::Kind::any_of: {
      std::string out = "any_of { ";
      for (size_t i = 0; i < m.any.size(); ++i) out += (i == 0 ? "" : ", ") + describe_matcher(m.any[i]);
      return out + " }";
    }
  }
  return "";
}

}  // namespace faultline::lua
