// Where a Lua error points, computed from the call stack with full chunk names.
#include "lua/lua_errors.h"

namespace faultline::lua {

std::string where_at(lua_State* L, int level) {
  lua_Debug ar;
  if (lua_getstack(L, level, &ar) == 0) return "";
  if (lua_getinfo(L, "Sl", &ar) == 0 || ar.currentline <= 0) return "";
  // "@path" chunks carry the whole path; anything else ("=stdin", load()ed strings) uses short_src.
  std::string where = (ar.source != nullptr && ar.source[0] == '@') ? std::string(ar.source + 1) : ar.short_src;
  return where + ":" + std::to_string(ar.currentline);
}

std::string nearest_where(lua_State* L, int level) {
  lua_Debug ar;
  for (int l = level; lua_getstack(L, l, &ar) != 0; ++l) {
    std::string where = where_at(L, l);
    if (!where.empty()) return where;
  }
  return "";
}

void raise_at_caller(lua_State* L, std::string_view message) {
  std::string where = where_at(L, 1);
  std::string full = where.empty() ? std::string(message) : where + ": " + std::string(message);
  lua_pushlstring(L, full.data(), full.size());
  lua_error(L);
  __builtin_unreachable();  // lua_error unwinds (a C++ throw in Debian's lua5.4-c++).
}

}  // namespace faultline::lua
