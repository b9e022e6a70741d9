// Runs a scenario in a fresh sandbox and hands back the faults::Scenario it declared, or where it went wrong.
#include "lua/scenario_loader.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "lua/actions.h"
#include "lua/json_values.h"
#include "lua/matchers.h"
#include "lua/preludes.h"
#include "lua/rule_reader.h"
#include "lua/sandbox.h"
#include "lua/scenario_api.h"
#include "lua/script_hooks.h"

namespace faultline::lua {

namespace {

// A scenario is a few KiB; this only keeps a wrong path (a disk image, /dev/zero) from eating memory.
constexpr size_t kMaxScenarioBytes = size_t{16} << 20;

// What luaL_loadfile skips and luaL_loadbuffer does not: a UTF-8 BOM and a "#!" first line.
// The first line is blanked, not removed, so line numbers stay right.
std::string_view skip_bom(std::string_view source) {
  if (source.substr(0, 3) == "\xEF\xBB\xBF") source.remove_prefix(3);
  return source;
}

std::string blank_shebang(std::string_view source) {
  std::string text(source);
  if (text.empty() || text[0] != '#') return text;
  const size_t end = text.find('\n');
  text.replace(0, end == std::string::npos ? text.size() : end, "");
  return text;
}

// Reads the whole file, or says why not (as "path: message": there is no line yet).
bool read_file(const std::string& path, std::string& out, std::string& error) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) {
    error = path + ": cannot open scenario: " + std::strerror(errno);
    return false;
  }
  char buffer[65536];
  size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) {
    out.append(buffer, got);
    if (out.size() > kMaxScenarioBytes) {
      error = path + ": scenario file is larger than 16 MiB";
      return false;
    }
  }
  if (std::ferror(file.get()) != 0) {
    error = path + ": cannot read scenario: " + std::strerror(errno);
    return false;
  }
  return true;
}

// Defines the scenario globals and runs every prelude; returns "" or what went wrong in a prelude.
std::string prepare(Sandbox& sandbox, ScenarioApi& api) {
  lua_State* L = sandbox.state();
  api.install(L);
  install_json(L);
  install_matchers(L);
  install_actions(L);
  for (const Prelude& prelude : preludes()) {
    std::string error = sandbox.run(prelude.source, "[prelude]/" + std::string(prelude.name));
    if (!error.empty()) return error;
    const std::string_view name = prelude.name;
    register_constructors(L, std::string(name.substr(0, name.rfind('.'))).c_str());
  }
  return "";
}

// The answers of upstream = "mock" come from the openai_api prelude itself, so the mock and the presets
// users call can never disagree on shape.
constexpr const char* kMockDefaults = R"lua(
  return openai_api.completion { content = "This is a mock response from faultline." },
         openai_api.stream { chunks = { "This ", "is ", "a mock ", "response ", "from ", "faultline." } }
)lua";

std::string add_mock_defaults(Sandbox& sandbox, faults::Scenario& scenario) {
  bool any = false;
  for (const auto& proxy : scenario.proxies) any = any || proxy.mock;
  if (!any) return "";
  lua_State* L = sandbox.state();
  const int top = lua_gettop(L);
  if (luaL_loadstring(L, kMockDefaults) != LUA_OK || lua_pcall(L, 0, 2, 0) != LUA_OK) {
    std::string error = std::string("[prelude]/mock defaults: ") + lua_tostring(L, -1);
    lua_settop(L, top);
    return error;
  }
  const faults::ActionSpec* completion = to_action(L, -2);
  const faults::ActionSpec* stream = to_action(L, -1);
  for (auto& proxy : scenario.proxies) {
    if (!proxy.mock || !completion || !stream) continue;
    proxy.mock_completion = *completion;
    proxy.mock_stream = *stream;
  }
  lua_settop(L, top);
  return "";
}

bool uses_functions(const faults::Scenario& scenario) {
  for (const auto& proxy : scenario.proxies)
    for (const auto& rule : proxy.rules)
      if (uses_function(rule)) return true;
  return false;
}

}  // namespace

LoadResult load_scenario_file(const std::string& path, std::optional<uint64_t> seed_override) {
  std::string source;
  std::string error;
  if (!read_file(path, source, error)) return {std::nullopt, error, nullptr};
  return load_scenario_source(source, path, seed_override);
}

LoadResult load_scenario_source(std::string_view source, const std::string& path,
                                std::optional<uint64_t> seed_override) {
  // The API outlives the sandbox: finalizers that run while the state closes may still call it.
  auto api = std::make_unique<ScenarioApi>(path, seed_override);
  auto sandbox = std::make_unique<Sandbox>();
  sandbox->seed_random(seed_override.value_or(1));
  std::string error = prepare(*sandbox, *api);
  if (error.empty()) error = sandbox->run(blank_shebang(skip_bom(source)), path);
  if (error.empty()) error = api->finish();
  if (!error.empty()) {
    sandbox.reset();
    return {std::nullopt, error, nullptr};
  }
  faults::Scenario scenario = api->take();
  if (error = add_mock_defaults(*sandbox, scenario); !error.empty()) return {std::nullopt, error, nullptr};
  if (!uses_functions(scenario)) {
    sandbox.reset();
    return {std::move(scenario), "", nullptr};
  }
  auto hooks = std::make_shared<LuaScriptHooks>(std::move(api), std::move(sandbox), scenario);
  return {std::move(scenario), "", std::move(hooks)};
}

}  // namespace faultline::lua
