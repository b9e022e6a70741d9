// Errors raised from our Lua C functions: where they point, and how C++ exceptions become Lua errors.
#pragma once

#include <exception>
#include <string>
#include <string_view>

#include <lua.hpp>

namespace faultline::lua {

// "path:LINE" of the Lua function `level` frames up (1 = whoever called the running C function).
// Uses the full chunk name, not Lua's short_src, which truncates long paths to "...tail".
// Returns "" when that frame has no line (a C function, or no such frame).
std::string where_at(lua_State* L, int level);

// The innermost frame, starting at `level`, that has a line: for hooks and message handlers,
// where the stack may begin with C functions.
std::string nearest_where(lua_State* L, int level);

// Raises `message` prefixed with the caller's "path:LINE: ". Never returns.
[[noreturn]] void raise_at_caller(lua_State* L, std::string_view message);

// Thrown by our C++ code under a Lua C function; `guarded` turns it into a Lua error at the
// scenario line that made the call.
class ScriptError : public std::exception {
 public:
  explicit ScriptError(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// Wraps a C function so no C++ exception escapes into Lua: one that escapes makes lua_pcall
// return -1 and the message is lost. Lua's own errors (a thrown lua_longjmp*) pass through
// untouched, which is why this never catches `...`.
template <lua_CFunction F>
int guarded(lua_State* L) {
  try {
    return F(L);
  } catch (const std::exception& e) {
    raise_at_caller(L, e.what());
  }
}

}  // namespace faultline::lua
