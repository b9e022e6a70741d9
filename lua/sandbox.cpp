// The sandboxed Lua state: capped allocator, instruction budget, safe libraries, seeded math.random.
#include "lua/sandbox.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "lua/lua_errors.h"

namespace faultline::lua {

namespace {

// The hook runs every this many instructions: often enough to stop a loop promptly, rarely
// enough to cost nothing measurable.
constexpr int kHookEvery = 1000;

constexpr const char* kTooLong = "scenario ran too long (infinite loop?)";
constexpr const char* kCallTooLong = "rule function ran too long (infinite loop?)";

// True when `message` already begins with "chunk:LINE:" (Lua's runtime errors and ours do;
// error("x", 0) and errors raised from C without a Lua caller do not).
bool starts_with_position(std::string_view message) {
  for (size_t colon = message.find(':'); colon != std::string_view::npos && colon < 400;
       colon = message.find(':', colon + 1)) {
    size_t end = colon + 1;
    while (end < message.size() && std::isdigit(static_cast<unsigned char>(message[end]))) ++end;
    if (colon > 0 && end > colon + 1 && end < message.size() && message[end] == ':') return true;
  }
  return false;
}

std::string mebibytes(size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// math.random with Lua 5.4's argument forms, drawn from the Decider so a seed replays it.
int math_random(lua_State* L) {
  faults::Rng rng = Sandbox::of(L).next_random();
  return push_random(L, rng);
}

// math.randomseed(x [, y]) restarts the sequence at a seed of the script's choosing;
// with no argument it restarts the current one (Lua would pick a random seed: not here).
int math_randomseed(lua_State* L) {
  Sandbox& sandbox = Sandbox::of(L);
  if (lua_isnone(L, 1)) {
    sandbox.seed_random(sandbox.random_seed());
    return 0;
  }
  const auto n1 = static_cast<uint64_t>(luaL_checkinteger(L, 1));
  const auto n2 = static_cast<uint64_t>(luaL_optinteger(L, 2, 0));
  sandbox.seed_random(n1 ^ (n2 * 0x9e3779b97f4a7c15ULL));
  return 0;
}

// print goes to stderr: stdout belongs to `faultline check` and to the CMD of `faultline run`.
int print_to_stderr(lua_State* L) {
  const int n = lua_gettop(L);
  for (int i = 1; i <= n; ++i) {
    size_t len = 0;
    const char* text = luaL_tolstring(L, i, &len);
    if (i > 1) std::fputc('\t', stderr);
    std::fwrite(text, 1, len, stderr);
    lua_pop(L, 1);
  }
  std::fputc('\n', stderr);
  std::fflush(stderr);
  return 0;
}

// load(chunk [, name [, mode [, env]]]) with mode forced to "t": a binary chunk can crash
// the VM, so only source text is accepted. The original load is upvalue 1.
int load_text_only(lua_State* L) {
  const int n = lua_gettop(L);
  // load tells "env absent" from "env = nil", so keep exactly the arguments given.
  lua_settop(L, n >= 4 ? 4 : 3);
  lua_pushliteral(L, "t");
  lua_replace(L, 3);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

int require_refused(lua_State* L) { return luaL_error(L, "require is not available in scenarios"); }

void open_library(lua_State* L, const char* name, lua_CFunction open, bool global) {
  luaL_requiref(L, name, open, global ? 1 : 0);
  lua_pop(L, 1);
}

void open_base(lua_State* L) {
  open_library(L, "_G", luaopen_base, true);
  lua_pushnil(L);
  lua_setglobal(L, "dofile");
  lua_pushnil(L);
  lua_setglobal(L, "loadfile");
  lua_getglobal(L, "load");
  lua_pushcclosure(L, load_text_only, 1);
  lua_setglobal(L, "load");
  lua_pushcfunction(L, print_to_stderr);
  lua_setglobal(L, "print");
  lua_pushcfunction(L, require_refused);
  lua_setglobal(L, "require");
}

// os with only the harmless readers: no execute, exit, remove, rename, tmpname, setlocale.
void open_reduced_os(lua_State* L) {
  luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
  lua_createtable(L, 0, 4);
  for (const char* name : {"time", "clock", "date", "getenv"}) {
    lua_getfield(L, -2, name);
    lua_setfield(L, -2, name);
  }
  lua_setglobal(L, LUA_OSLIBNAME);
  lua_pop(L, 1);
}

void open_seeded_math(lua_State* L) {
  luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
  lua_pushcfunction(L, math_random);
  lua_setfield(L, -2, "random");
  lua_pushcfunction(L, math_randomseed);
  lua_setfield(L, -2, "randomseed");
  lua_pop(L, 1);
}

}  // namespace

int push_random(lua_State* L, faults::Rng& rng) {
  lua_Integer low = 1;
  lua_Integer up = 0;
  switch (lua_gettop(L)) {
    case 0:
      lua_pushnumber(L, rng.uniform01());
      return 1;
    case 1:
      up = luaL_checkinteger(L, 1);
      if (up == 0) {  // random(0): an integer with all bits random
        lua_pushinteger(L, static_cast<lua_Integer>(rng.next()));
        return 1;
      }
      break;
    case 2:
      low = luaL_checkinteger(L, 1);
      up = luaL_checkinteger(L, 2);
      break;
    default:
      return luaL_error(L, "wrong number of arguments");
  }
  luaL_argcheck(L, low <= up, 1, "interval is empty");
  lua_pushinteger(L, rng.range(low, up));
  return 1;
}

Sandbox::Sandbox(SandboxLimits limits) : limits_(limits) {
  L_ = lua_newstate(&Sandbox::allocate, this);
  if (L_ == nullptr) throw std::runtime_error("cannot create a Lua state");
  open_libraries();
}

Sandbox::~Sandbox() {
  // lua_close runs pending __gc finalizers; the hook is still armed, so they are bounded too.
  if (L_ != nullptr) lua_close(L_);
}

Sandbox& Sandbox::of(lua_State* L) noexcept {
  void* ud = nullptr;
  lua_getallocf(L, &ud);
  return *static_cast<Sandbox*>(ud);
}

void Sandbox::open_libraries() {
  open_base(L_);
  open_library(L_, LUA_STRLIBNAME, luaopen_string, true);
  open_library(L_, LUA_TABLIBNAME, luaopen_table, true);
  open_library(L_, LUA_UTF8LIBNAME, luaopen_utf8, true);
  open_library(L_, LUA_COLIBNAME, luaopen_coroutine, true);
  open_seeded_math(L_);
  open_reduced_os(L_);
}

void Sandbox::seed_random(uint64_t seed) noexcept {
  random_seed_ = seed;
  random_draws_ = 0;
}

faults::Rng Sandbox::next_random() noexcept { return faults::decide(random_seed_, "math.random", "", random_draws_++); }

std::string Sandbox::run(std::string_view source, const std::string& path) {
  start_budget(limits_.instructions, kTooLong);
  path_ = path;
  const std::string chunk_name = "@" + path;
  short_src_ = short_source(chunk_name);
  const int base = lua_gettop(L_);
  const int status = luaL_loadbufferx(L_, source.data(), source.size(), chunk_name.c_str(), "t");
  if (status != LUA_OK) {
    std::string error = describe_failure(status, path_, short_src_);
    lua_settop(L_, base);
    return error;
  }
  return protected_call(base + 1, 0, 0);
}

std::string Sandbox::call(int nargs, int nresults) {
  start_budget(limits_.call_instructions, kCallTooLong);
  return protected_call(lua_gettop(L_) - nargs, nargs, nresults);
}

void Sandbox::start_budget(uint64_t instructions, const char* too_long) noexcept {
  executed_ = 0;
  budget_ = instructions;
  too_long_ = too_long;
  tripped_.clear();
  allocation_failed_ = false;
  last_where_.clear();
  arm_hook(L_, kHookEvery);
}

// Runs the function at `function_index` (arguments above it) under the message handler.
std::string Sandbox::protected_call(int function_index, int nargs, int nresults) {
  const int base = function_index - 1;
  lua_pushcfunction(L_, &Sandbox::message_handler);
  lua_insert(L_, function_index);
  const int status = lua_pcall(L_, nargs, nresults, function_index);
  if (status != LUA_OK) {
    std::string error = describe_failure(status, path_, short_src_);
    lua_settop(L_, base);
    return error;
  }
  lua_remove(L_, function_index);  // the handler, below the results
  return "";
}

// What Lua calls the chunk in its own messages: long paths become "...tail".
std::string Sandbox::short_source(const std::string& chunk_name) {
  if (luaL_loadbufferx(L_, "", 0, chunk_name.c_str(), "t") != LUA_OK) {
    lua_pop(L_, 1);
    return chunk_name.substr(1);
  }
  lua_Debug ar;
  lua_getinfo(L_, ">S", &ar);
  return ar.short_src;
}

std::string Sandbox::describe_failure(int status, const std::string& path, const std::string& short_src) {
  if (status == LUA_ERRMEM) {
    // Lua raises this with no position and without calling the message handler: use the
    // last line the hook saw, which is the call or loop that was allocating.
    const std::string where = last_where_.empty() ? path + ":1" : last_where_;
    return where + ": not enough memory (a scenario may use at most " + mebibytes(limits_.memory_bytes) + ")";
  }
  std::string message = lua_type(L_, -1) == LUA_TSTRING ? lua_tostring(L_, -1) : "(error object is not a string)";
  if (short_src != path && message.rfind(short_src + ":", 0) == 0) message = path + message.substr(short_src.size());
  if (!starts_with_position(message)) message = path + ":1: " + message;  // e.g. a binary main chunk
  return message;
}

void* Sandbox::allocate(void* ud, void* ptr, size_t old_size, size_t new_size) noexcept {
  auto* self = static_cast<Sandbox*>(ud);
  const size_t old_block = ptr != nullptr ? old_size : 0;  // with ptr == NULL, old_size is a type tag
  if (new_size == 0) {
    std::free(ptr);
    self->in_use_ -= old_block;
    return nullptr;
  }
  if (new_size > old_block && new_size - old_block > self->limits_.memory_bytes - self->in_use_) {
    self->allocation_failed_ = true;
    return nullptr;  // Lua collects garbage, retries once, then raises "not enough memory"
  }
  void* block = std::realloc(ptr, new_size);
  if (block == nullptr) {
    self->allocation_failed_ = true;
    return nullptr;
  }
  self->in_use_ = self->in_use_ - old_block + new_size;
  return block;
}

void Sandbox::arm_hook(lua_State* L, int count) noexcept {
  // Call events only record where the script is, for allocation failures, which carry no stack.
  lua_sethook(L, &Sandbox::hook, LUA_MASKCOUNT | LUA_MASKCALL, count);
}

void Sandbox::hook(lua_State* L, lua_Debug* ar) {
  try {
    of(L).on_hook(L, ar);
  } catch (const std::exception&) {
    // Only bad_alloc of a std::string can land here; skipping one hook is harmless, and
    // letting it escape would lose the script's error. Lua's own errors are not std::exception.
  }
}

void Sandbox::on_hook(lua_State* L, lua_Debug* ar) {
  if (ar->event != LUA_HOOKCOUNT) {
    // Never raise on a call: the call may be to the message handler, and an error there
    // would replace the real message with "error in error handling".
    note_where(L);
    return;
  }
  if (tripped_.empty()) {
    executed_ += kHookEvery;
    if (allocation_failed_)
      tripped_ = "not enough memory (a scenario may use at most " + mebibytes(limits_.memory_bytes) + ")";
    else if (executed_ > budget_)
      tripped_ = too_long_;
    if (tripped_.empty()) {
      note_where(L);
      return;
    }
  }
  // Once tripped, every instruction raises again, so a script's pcall cannot swallow the stop.
  arm_hook(L, 1);
  const std::string where = nearest_where(L, 0);
  const std::string message = where.empty() ? tripped_ : where + ": " + tripped_;
  lua_pushlstring(L, message.data(), message.size());
  lua_error(L);
}

// Calls with no script frame under them (a to-be-closed buffer closed while an error unwinds)
// would erase the line that was allocating, so they leave it as it was.
void Sandbox::note_where(lua_State* L) {
  if (!tripped_.empty()) return;
  std::string where = nearest_where(L, 0);
  if (!where.empty()) last_where_ = std::move(where);
}

// Gives every runtime error a "path:LINE: " even when the script raised it without one.
int Sandbox::message_handler(lua_State* L) {
  try {
    return add_position(L);
  } catch (const std::exception&) {
    lua_settop(L, 1);  // keep the original error rather than lose it to an escaping exception
    return 1;
  }
}

int Sandbox::add_position(lua_State* L) {
  if (lua_type(L, 1) == LUA_TSTRING && starts_with_position(lua_tostring(L, 1))) return 1;
  std::string message;
  if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER) {
    lua_pushvalue(L, 1);
    message = lua_tostring(L, -1);
    lua_pop(L, 1);
  } else {
    // No __tostring here: running script code inside the handler could fail in turn.
    message = std::string("(error object is a ") + luaL_typename(L, 1) + " value)";
  }
  const std::string where = nearest_where(L, 1);
  if (!where.empty()) message = where + ": " + message;
  lua_pushlstring(L, message.data(), message.size());
  return 1;
}

}  // namespace faultline::lua
