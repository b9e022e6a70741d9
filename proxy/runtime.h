// State shared by every worker: the immutable scenario and, beside it, atomic counters (DESIGN: Envoy's
// split of configuration and runtime state).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "faults/address.h"
#include "faults/journal.h"
#include "faults/replay.h"
#include "faults/rule_engine.h"
#include "faults/scenario.h"

using SSL_CTX = struct ssl_ctx_st;

namespace faultline::proxy {

struct ToxicRuntime {
  const faults::ToxicSpec* spec = nullptr;
  std::unique_ptr<faults::ToxicSpec> owned_spec;  // a toxic made or changed through the control API
  // Removed through the control API (or replaced by a changed copy): never again decided; kept in memory,
  // since connections may still run it. Written under the proxy's toxics_mu.
  bool removed = false;
  bool superseded = false;  // removed because a changed copy took its place (its count went with it)
  std::atomic<uint64_t> fired{0};  // connections it took effect on
  std::atomic<bool> expiry_reported{false};  // its ttl ran out and the log and journal said so
  std::atomic<bool> enabled{true};           // off: takes effect on no new connection (the kill switch)
};

// Time from a request sent upstream (or the reply before it ending) to the first byte of its reply.
struct LatencyHistogram {
  static constexpr double kBounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  static constexpr size_t kBuckets = sizeof(kBounds) / sizeof(kBounds[0]);
  std::atomic<uint64_t> buckets[kBuckets + 1] = {};  // the last one: above every bound
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> sum_us{0};
  void observe(uint64_t us) {
    const double s = static_cast<double>(us) / 1e6;
    size_t i = 0;
    while (i < kBuckets && s > kBounds[i]) ++i;
    buckets[i].fetch_add(1, std::memory_order_relaxed);
    count.fetch_add(1, std::memory_order_relaxed);
    sum_us.fetch_add(us, std::memory_order_relaxed);
  }
};

struct ProxyRuntime {
  const faults::ProxySpec* spec = nullptr;
  std::unique_ptr<faults::ProxySpec> owned_spec;  // a proxy made through the control API: its spec
  // Of the scenario it belongs to (a reload makes new proxies; connections keep the ones they started
  // with): the seed its decisions draw from, its Lua functions, and when it started (`during`, `ttl`).
  uint64_t seed = 1;
  std::shared_ptr<faults::ScriptHooks> hooks;
  uint64_t start_ns = 0;
  double seconds() const { return static_cast<double>(uv_hrtime() - start_ns) / 1e9; }
  // Control API state, read and written on worker 0's loop only.
  bool enabled = true;   // listening (Toxiproxy's "enabled")
  bool removed = false;  // deleted through the API, or replaced by a reload: kept in memory (connections
                         // may still refer to it)
  bool from_scenario = false;  // declared in the scenario (a reload replaces it), not made through the API
  faults::HostPort upstream;
  std::string bound;                     // actual listen address, host:port
  std::string rebind;                    // disabled: the address it listened on, to listen on again (port 0 resolved)
  std::atomic<uint64_t> connections{0};  // ordinal of the latest accepted connection
  std::atomic<uint64_t> active{0};
  // For GET /metrics.
  std::atomic<uint64_t> bytes_up{0};        // read from clients
  std::atomic<uint64_t> bytes_down{0};      // read from upstreams
  std::atomic<uint64_t> messages{0};        // requests, commands, queries decided on
  std::atomic<uint64_t> connect_errors{0};  // upstream connections that could not be made (or TLS set up)
  LatencyHistogram upstream_latency;
  std::vector<std::unique_ptr<ToxicRuntime>> toxics;
  // Guards `toxics` against the control API changing it (on worker 0) while another worker accepts.
  mutable std::mutex toxics_mu;
  std::unique_ptr<faults::RuleEngine> rules;  // null when the proxy has no rules
  bool needs_body = false;                    // json matchers or functions (or a mock) read request bodies
  std::string upstream_host_header;           // Host for the upstream: host, with :port unless the default
  std::shared_ptr<SSL_CTX> upstream_tls;      // https upstream
  std::shared_ptr<SSL_CTX> listen_tls;        // TLS termination on the listener
};

class Worker;

struct Runtime {
  faults::Scenario scenario;
  std::shared_ptr<faults::ScriptHooks> hooks;  // the scenario's Lua functions (null without any)
  uint64_t start_ns = 0;                       // uv_hrtime() when the proxies started
  // Scenarios a reload replaced: their proxies' specs stay valid for the connections that still use them.
  std::vector<std::unique_ptr<faults::Scenario>> retired;
  // Loads a scenario for a reload: from `source` (PUT /scenario) or, when null, from the scenario's file
  // again (SIGHUP). Set by main, where the Lua loader lives; false with *error ("FILE:LINE: ...").
  std::function<bool(const std::string* source, faults::Scenario* out, std::shared_ptr<faults::ScriptHooks>* hooks,
                     std::string* error)>
      load_scenario;
  faults::Journal journal;
  std::optional<faults::ReplaySet> replay;
  std::vector<std::unique_ptr<ProxyRuntime>> proxies;
  std::atomic<uint64_t> next_conn_id{0};  // process-wide connection number (journal "conn")
  std::vector<Worker*> workers;           // every worker, for the control API's changes at run time
};

}  // namespace faultline::proxy
