// State shared by every worker: the immutable scenario and, beside it, atomic counters (DESIGN: Envoy's
// split of configuration and runtime state).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "faults/address.h"
#include "faults/journal.h"
#include "faults/replay.h"
#include "faults/scenario.h"

namespace faultline::proxy {

struct ToxicRuntime {
  const faults::ToxicSpec* spec = nullptr;
  std::atomic<uint64_t> fired{0};  // connections it took effect on
};

struct ProxyRuntime {
  const faults::ProxySpec* spec = nullptr;
  faults::HostPort upstream;
  std::string bound;                     // actual listen address, host:port
  std::atomic<uint64_t> connections{0};  // ordinal of the latest accepted connection
  std::atomic<uint64_t> active{0};
  std::vector<std::unique_ptr<ToxicRuntime>> toxics;
};

struct Runtime {
  faults::Scenario scenario;
  faults::Journal journal;
  std::optional<faults::ReplaySet> replay;
  std::vector<std::unique_ptr<ProxyRuntime>> proxies;
  std::atomic<uint64_t> next_conn_id{0};  // process-wide connection number (journal "conn")
};

}  // namespace faultline::proxy
