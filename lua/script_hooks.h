// faults::ScriptHooks over the scenario's own Lua state, kept alive after load for rule and key functions.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "faults/message.h"
#include "faults/rule.h"
#include "faults/scenario.h"
#include "lua/sandbox.h"
#include "lua/scenario_api.h"

namespace faultline::lua {

// Calls the functions a scenario gave as `action` or `key`. One call at a time (a mutex: workers
// are threads), each bounded by the sandbox's call_instructions and memory cap.
class LuaScriptHooks : public faults::ScriptHooks {
 public:
  // Takes over the state the scenario ran in; `scenario` names the rules behind each function.
  LuaScriptHooks(std::unique_ptr<ScenarioApi> api, std::unique_ptr<Sandbox> sandbox, const faults::Scenario& scenario);
  ~LuaScriptHooks() override;

  std::optional<std::string> key(int function_ref, const faults::Message& msg, std::string* error) override;
  std::optional<faults::ActionSpec> action(int function_ref, const faults::Message& msg, const CallContext& ctx,
                                           std::string* error) override;

 private:
  struct Call;  // one call's inputs, read by the protected trampoline
  static int trampoline(lua_State* L);
  static int lazy_index(lua_State* L);
  static int ctx_random(lua_State* L);
  static int ctx_log(lua_State* L);
  static int ctx_index(lua_State* L);
  static int msg_index(lua_State* L);

  Call make_call(int function_ref, const faults::Message& msg, const std::string& rule);
  std::string run(Call& call);
  int invoke(lua_State* L, const Call& call);
  void push_message(lua_State* L, const faults::Message& msg);
  void push_lazy(lua_State* L, const char* kind);
  void push_context(lua_State* L, const Call& call);
  void check_result(lua_State* L, const Call& call);
  std::string function_where(int function_ref);

  std::mutex mutex_;
  std::unique_ptr<ScenarioApi> api_;  // outlives sandbox_: finalizers may still call it while the state closes
  std::unique_ptr<Sandbox> sandbox_;
  std::map<int, std::string> key_rules_;      // key function ref -> the rule's name
  std::map<int, std::string> where_;          // function ref -> "path:LINE" where it was defined
  const faults::Message* current_ = nullptr;  // the message of the call in progress
  const Call* current_call_ = nullptr;        // and its call
  uint64_t generation_ = 0;                   // counts calls: a msg kept from an earlier call is stale
};

}  // namespace faultline::lua
