// Replacing the running scenario (SPEC §5: PUT /faultline/v1/scenario, SIGHUP): all or nothing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "faults/scenario.h"

namespace faultline::proxy {

struct Runtime;

struct ReloadResult {
  bool ok = false;
  int status = 200;   // an HTTP status for the control API: 400 a broken scenario, 409 refused, 500 listen failed
  std::string error;  // names what was wrong and where ("scenario.lua:12: ...")
  std::vector<std::string> kept;     // proxies whose listener (and open connections) stayed
  std::vector<std::string> started;  // proxies listening on a new address
  std::vector<std::string> stopped;  // proxies no longer in the scenario: closed, with their connections
};

// On worker 0's loop. Loads the scenario from `source`, or from the scenario file again when null, and
// swaps it in at once: a proxy whose listen address did not change keeps its listener and its open
// connections (which go on with the scenario they started with); new connections get the new scenario.
// On any error nothing changes.
ReloadResult reload_scenario(Runtime& rt, const std::string* source);

}  // namespace faultline::proxy
