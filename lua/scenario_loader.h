// Runs a scenario file in a sandboxed Lua 5.4 state and turns what it declares into faults::Scenario.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "faults/scenario.h"

namespace faultline::lua {

struct LoadResult {
  std::optional<faults::Scenario> scenario;
  std::string error;  // "FILE:LINE: message" when scenario is empty
  // The scenario's Lua state, kept for its rule and key functions (RuleSpec::action_function_ref,
  // KeySpec::function_ref); null when the scenario declares no function. Keep it as long as the scenario.
  std::shared_ptr<faults::ScriptHooks> hooks;
};

// Reads and runs the file at `path`; the chunk is named "@path" so errors read "path:LINE: ...".
// `seed_override` (from --seed) wins over the scenario's seed() and seeds math.random.
LoadResult load_scenario_file(const std::string& path, std::optional<uint64_t> seed_override = std::nullopt);

// Runs `source` as if it were the file `path` (used by tests and, later, PUT /scenario).
LoadResult load_scenario_source(std::string_view source, const std::string& path,
                                std::optional<uint64_t> seed_override = std::nullopt);

}  // namespace faultline::lua
