// Runs a loaded scenario: binds listeners, starts the workers, handles signals, reports at the end.
#pragma once

#include <memory>
#include <string>

#include "faults/scenario.h"

namespace faultline::proxy {

struct ServerOptions {
  int threads = 1;
  std::string journal_path;  // empty: journal kept in memory only
  std::string replay_path;   // empty: no replay
  std::shared_ptr<faults::ScriptHooks> hooks;  // the scenario's Lua functions, if it has any
};

// Returns the process exit code (SPEC §1): 0 clean shutdown, 1 runtime failure, 2 usage error.
int run_server(faults::Scenario scenario, const ServerOptions& options);

}  // namespace faultline::proxy
