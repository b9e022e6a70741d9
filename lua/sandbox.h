// A bounded, library-restricted Lua 5.4 state for running untrusted scenario code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <lua.hpp>

#include "faults/decider.h"

namespace faultline::lua {

struct SandboxLimits {
  size_t memory_bytes = size_t{64} << 20;  // hard ceiling of the allocator
  uint64_t instructions = 50'000'000;      // per run(), counted by a hook
  uint64_t call_instructions = 1'000'000;  // per call() of a rule function: it runs on the event loop
};

// Lua 5.4's math.random argument forms ((), (m), (m, n), (0)) drawn from `rng`; pushes one result.
// Shared by math.random and a rule function's ctx.random.
int push_random(lua_State* L, faults::Rng& rng);

// Owns one lua_State with: a memory-capped allocator; an instruction-count hook; only the
// base (no dofile/loadfile, text-only load), string, table, math, utf8 and coroutine
// libraries plus os.time/clock/date/getenv; math.random drawn from the Decider; print to
// stderr. No io, package, require or debug.
class Sandbox {
 public:
  explicit Sandbox(SandboxLimits limits = {});
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  lua_State* state() const noexcept { return L_; }
  // The Sandbox that owns `L` (any thread of it).
  static Sandbox& of(lua_State* L) noexcept;

  // math.random draws decide(seed, "math.random", "", n) with n restarting at 0 here.
  void seed_random(uint64_t seed) noexcept;
  uint64_t random_seed() const noexcept { return random_seed_; }
  // The generator for the next math.random call.
  faults::Rng next_random() noexcept;

  // Loads `source` as a text chunk named "@path" and calls it with a fresh instruction budget.
  // Returns "" on success, else "path:LINE: message".
  std::string run(std::string_view source, const std::string& path);

  // Calls the function below `nargs` arguments on the stack (a rule function, after the scenario
  // ran) with a fresh budget of limits().call_instructions. On success leaves `nresults` results
  // and returns ""; else pops everything it was given and returns "path:LINE: message".
  std::string call(int nargs, int nresults);

  const SandboxLimits& limits() const noexcept { return limits_; }

  size_t memory_in_use() const noexcept { return in_use_; }

 private:
  static void* allocate(void* ud, void* ptr, size_t old_size, size_t new_size) noexcept;
  static void hook(lua_State* L, lua_Debug* ar);
  static int message_handler(lua_State* L);
  static int add_position(lua_State* L);
  void open_libraries();
  void arm_hook(lua_State* L, int count) noexcept;
  void start_budget(uint64_t instructions, const char* too_long) noexcept;
  std::string protected_call(int function_index, int nargs, int nresults);
  void on_hook(lua_State* L, lua_Debug* ar);
  void note_where(lua_State* L);
  std::string describe_failure(int status, const std::string& path, const std::string& short_src);
  std::string short_source(const std::string& chunk_name);

  SandboxLimits limits_;
  size_t in_use_ = 0;
  bool allocation_failed_ = false;  // set by the allocator, acted on by the next hook
  uint64_t executed_ = 0;
  uint64_t budget_ = 0;        // instructions allowed in the current run() or call()
  const char* too_long_ = "";  // what exhausting it says
  std::string path_;           // the scenario's path and Lua's short name for it, from run(),
  std::string short_src_;      // so messages of later calls read like the scenario's own
  std::string tripped_;        // once a limit is hit, every further instruction raises this
  std::string last_where_;     // the last line the hook saw: allocation failures have no stack
  uint64_t random_seed_ = 1;
  uint64_t random_draws_ = 0;
  lua_State* L_ = nullptr;
};

}  // namespace faultline::lua
