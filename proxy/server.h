// Runs a loaded scenario: binds listeners, starts the workers, handles signals, reports at the end.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "faults/scenario.h"

namespace faultline::proxy {

struct ServerOptions {
  int threads = 1;
  std::string journal_path;  // empty: journal kept in memory only
  std::string replay_path;   // empty: no replay
  std::shared_ptr<faults::ScriptHooks> hooks;  // the scenario's Lua functions, if it has any
  std::vector<std::string> command;  // `run`: CMD and its arguments, run once the proxies listen
  std::string report_json;           // write the run report (SPEC §4.2) here at exit
  std::string admin = "off";         // control API address host:port, or "off"
  bool admin_explicit = false;       // given on the command line: failing to bind it is an error, not a warning
  std::string admin_token;
  size_t journal_lines = 10000;      // journal lines kept in memory for the control API
  // Loads the scenario again for a reload (Runtime::load_scenario).
  std::function<bool(const std::string* source, faults::Scenario* out, std::shared_ptr<faults::ScriptHooks>* hooks,
                     std::string* error)>
      load_scenario;
};

struct ProxyRuntime;

// Binds `count` listening sockets (SO_REUSEPORT when more than one) to the proxy's listen address, all on
// one port; sets p.bound to the address really bound. False with *why on failure (nothing left open).
bool bind_listeners(ProxyRuntime& p, int count, std::vector<int>* fds, std::string* why);

struct Runtime;

// A proxy of a loaded scenario, ready to listen (not bound yet): its rules, toxics and TLS contexts. Null
// with *why ("[NAME] TLS: ...") when its TLS setup fails.
std::unique_ptr<ProxyRuntime> make_scenario_proxy(Runtime& rt, const faults::ProxySpec& spec, uint64_t seed,
                                                  std::shared_ptr<faults::ScriptHooks> hooks, std::string* why);

// Returns the process exit code (SPEC §1): 0 clean shutdown, 1 runtime failure, 2 usage error; with a
// command, its exit code (128 + N when signal N ended it; 127 when it could not be found), or 3 when it
// succeeded but an expectation was not met or a replayed fault never came.
int run_server(faults::Scenario scenario, const ServerOptions& options);

}  // namespace faultline::proxy
