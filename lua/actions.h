// Action values in Lua (delay, hang, drop, reset, pass, http.*, redis.*, postgres.*) and their faults::ActionSpec.
#pragma once

#include <optional>
#include <string>

#include <lua.hpp>

#include "faults/rule.h"
#include "faults/scenario.h"

namespace faultline::lua {

// Defines the generic action globals and the http, redis and postgres tables. Needs install_json.
void install_actions(lua_State* L);

// Marks every function in the global table `table` (e.g. "openai_api", defined by a prelude) as an
// action constructor, so `action = openai_api.server_error` (not called) is reported as such.
void register_constructors(lua_State* L, const char* table);

// The action at `index`, or nullptr when the value is not one. `constructor` (may be null)
// receives its maker's name, e.g. "http.respond".
const faults::ActionSpec* to_action(lua_State* L, int index, std::string* constructor = nullptr);

// "http.respond" when the value at `index` is an action constructor itself (forgot to call it), else "".
std::string constructor_name(lua_State* L, int index);

// The protocol an action type belongs to; nullopt for the generic ones.
std::optional<faults::Protocol> action_protocol(faults::ActionSpec::Type type);

// "" when `action` may run on a proxy of `protocol`, else why not:
// "action http.respond is for http proxies; proxy 'cache' is redis".
std::string check_action_protocol(const faults::ActionSpec& action, const std::string& constructor,
                                  const faults::ProxySpec& proxy);

}  // namespace faultline::lua
