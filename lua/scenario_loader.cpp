// Placeholder until the sandboxed loader lands.
#include "lua/scenario_loader.h"

namespace faultline::lua {

LoadResult load_scenario_file(const std::string& path, std::optional<uint64_t>) { return {std::nullopt, path + ":1: loader not built yet"}; }

LoadResult load_scenario_source(std::string_view, const std::string& path, std::optional<uint64_t>) {
  return {std::nullopt, path + ":1: loader not built yet"};
}

}  // namespace faultline::lua
