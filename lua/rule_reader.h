// Reads one `p:rule { ... }` table into a faults::RuleSpec, checking every field against the proxy's protocol.
#pragma once

#include <lua.hpp>

#include "faults/rule.h"
#include "faults/scenario.h"

namespace faultline::lua {

// Reads the rule table at `index` for `proxy` (the rule is its proxy.rules.size() + 1-th). Throws
// ScriptError ("rule 'NAME': ...") on any mistake. Functions (action, key) are kept with luaL_ref
// in the registry of L; the name is not yet checked for uniqueness across the scenario.
faults::RuleSpec read_rule(lua_State* L, int index, const faults::ProxySpec& proxy);

// Whether the rule calls into Lua at run time (an action or key function).
bool uses_function(const faults::RuleSpec& rule);

}  // namespace faultline::lua
