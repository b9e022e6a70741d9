// The Lua-written preludes (lua/prelude/*.lua), embedded at build time and run before every scenario.
#pragma once

#include <span>
#include <string_view>

namespace faultline::lua {

struct Prelude {
  std::string_view name;    // file name, e.g. "openai_api.lua"; it defines the global table of its stem
  std::string_view source;  // the file's text
};

// In file-name order. Defined in the generated lua_preludes.cpp (see lua/prelude/embed_preludes.cmake).
std::span<const Prelude> preludes();

}  // namespace faultline::lua
