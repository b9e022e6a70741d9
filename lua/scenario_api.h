// The functions a scenario calls (seed, proxy, p:toxic, p:rule, expect) and the Scenario they fill.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <lua.hpp>

#include "faults/scenario.h"

namespace faultline::lua {

// Lives longer than the sandbox it is installed in: finalizers may still call into it while the
// state closes, and then they get an error instead of a dangling pointer.
class ScenarioApi {
 public:
  ScenarioApi(std::string path, std::optional<uint64_t> seed_override);

  // Defines the scenario globals in `L`, which must belong to a Sandbox (seed() reseeds it).
  void install(lua_State* L);
  // After the script ran: checks what needs the whole scenario (expects naming something).
  // Returns "" or "FILE:LINE: message". Afterwards the API refuses further calls.
  std::string finish();
  faults::Scenario take() { return std::move(scenario_); }

 private:
  static ScenarioApi& self(lua_State* L);
  static int lua_seed(lua_State* L);
  static int lua_proxy(lua_State* L);
  static int lua_toxic(lua_State* L);
  static int lua_rule(lua_State* L);
  static int lua_expect(lua_State* L);
  static int lua_proxy_tostring(lua_State* L);

  void check_open() const;
  faults::ProxySpec& checked_proxy(lua_State* L, const char* method);
  void add_proxy(lua_State* L, faults::ProxySpec spec);
  void check_listen_unique(const faults::ProxySpec& spec) const;
  std::string check_expect(const faults::ExpectSpec& expect, bool names_toxic) const;
  bool has_toxic(const std::string& name) const;
  const faults::RuleSpec* find_rule(const std::string& name) const;
  std::string rule_names() const;
  std::string toxic_names() const;

  faults::Scenario scenario_;
  std::optional<uint64_t> seed_override_;
  std::vector<bool> expect_names_toxic_;  // parallel to scenario_.expects
  bool finished_ = false;
};

}  // namespace faultline::lua
