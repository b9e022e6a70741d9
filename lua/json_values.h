// Lua values as JSON and back: the `json` global (null, array, object, encode) and the conversions
// that http.respond, redis.reply, match.json and a rule function's msg.json use.
#pragma once

#include <string>

#include <lua.hpp>
#include <nlohmann/json.hpp>

namespace faultline::lua {

// Defines `json` in L: json.null (a value that stands for JSON null, where Lua's nil cannot:
// in a list or a table field), json.array(t) / json.object(t) (mark t, e.g. an empty table, as a
// JSON array or object) and json.encode(value) (compact JSON text, object keys sorted).
void install_json(lua_State* L);

// Pushes json.null.
void push_json_null(lua_State* L);
bool is_json_null(lua_State* L, int index);

// The JSON for the Lua value at `index`. Tables with keys 1..n are arrays, with string keys
// objects, an empty table an object unless json.array marked it. Throws ScriptError starting with
// `what` for values JSON cannot hold (functions, NaN, mixed tables, cycles).
nlohmann::json to_json(lua_State* L, int index, const std::string& what);

// Pushes `value` as Lua: objects and arrays become tables, null becomes json.null.
void push_json(lua_State* L, const nlohmann::json& value);

}  // namespace faultline::lua
