// Lua 5.4 patterns (manual §6.4.1) in plain C++, so faults/ can match `pattern "p"` without a lua_State.
#pragma once

#include <string>
#include <string_view>

namespace faultline::faults {

// True iff Lua's `string.find(subject, pattern)` finds a match: unanchored unless the pattern
// starts with ^, $ at the very end anchors at the end. Like string.find, a pattern with none of
// ^$*+?.([%- is searched for as plain text. Classes use the "C" locale whatever the
// process locale is. A malformed pattern (see lua_pattern_check) gives false; so does one that
// would exceed Lua's recursion bound ("pattern too complex"), which lua_pattern_check rejects.
bool lua_pattern_find(std::string_view subject, std::string_view pattern) noexcept;

// True when `pattern` can be used; false with Lua's message in *error otherwise, e.g.
// "malformed pattern (ends with '%')", "malformed pattern (missing ']')", "unfinished capture",
// "invalid pattern capture", "invalid capture index %2". Lua reports these lazily, when a
// match attempt reaches them; this rejects them up front, so a scenario fails at load, not on traffic.
// It also rejects patterns that could nest deeper than Lua's 200 calls or open more than 32 captures.
bool lua_pattern_check(std::string_view pattern, std::string* error);

}  // namespace faultline::faults
