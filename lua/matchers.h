// String matchers as scenario values: `prefix "s"`, `pattern "p"`, `any_of { ... }`, and a plain string.
#pragma once

#include <string>

#include <lua.hpp>

#include "faults/rule.h"

namespace faultline::lua {

// Defines the globals prefix, pattern and any_of. A matcher is a userdata scripts cannot forge.
void install_matchers(lua_State* L);

// The matcher at `index`: a string (exact), or a value made by prefix/pattern/any_of. Otherwise
// throws ScriptError "<what> must be a string or a matcher (prefix, pattern, any_of), got ...".
faults::StringMatcher read_matcher(lua_State* L, int index, const std::string& what);
bool is_matcher(lua_State* L, int index);

// Sets case_insensitive on `m` and every matcher inside it.
void make_case_insensitive(faults::StringMatcher& m);

// `prefix "s"` etc., as a scenario would write it (for messages and tests).
std::string describe_matcher(const faults::StringMatcher& m);

}  // namespace faultline::lua
