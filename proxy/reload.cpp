// Scenario reload: build every new proxy and bind every new address first, then swap in one step on
// worker 0, so that a failure at any point leaves the running scenario as it was.
#include "proxy/reload.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "proxy/runtime.h"
#include "proxy/server.h"
#include "proxy/worker.h"

namespace faultline::proxy {

namespace {

ReloadResult refused(int status, std::string why) {
  ReloadResult r;
  r.status = status;
  r.error = std::move(why);
  return r;
}

// Port 0 asks for any free port, which is no address of its own: only the proxy of the same name that
// asked the same keeps its listener then.
bool same_address(const ProxyRuntime& old, const faults::ProxySpec& spec) {
  if (spec.listen == old.bound) return true;
  if (spec.listen != old.spec->listen) return false;
  std::string why;
  const auto hp = faults::parse_host_port(spec.listen, &why);
  return (hp && hp->port != 0) || spec.name == old.spec->name;
}

// The running proxy whose listener `spec` takes over: one of the scenario's, listening on the same address,
// preferably of the same name. Null: it listens anew.
ProxyRuntime* listener_for(Runtime& rt, const faults::ProxySpec& spec, const std::vector<ProxyRuntime*>& taken) {
  ProxyRuntime* any = nullptr;
  for (auto& p : rt.proxies) {
    if (!p->from_scenario || p->removed || !p->enabled || p->bound.empty() || !same_address(*p, spec)) continue;
    if (std::find(taken.begin(), taken.end(), p.get()) != taken.end()) continue;
    if (p->spec->name == spec.name) return p.get();
    if (!any) any = p.get();
  }
  return any;
}

void close_fds(std::vector<std::vector<int>>& fds) {
  for (auto& list : fds)
    for (int fd : list) ::close(fd);
  fds.clear();
}

}  // namespace

ReloadResult reload_scenario(Runtime& rt, const std::string* source) {
  if (rt.replay)
    return refused(409, "a replayed run keeps the scenario it recorded (--replay): a reload would move every "
                        "recorded fault's position");
  if (!rt.load_scenario) return refused(409, "this faultline cannot reload its scenario");
  auto next = std::make_unique<faults::Scenario>();
  std::shared_ptr<faults::ScriptHooks> hooks;
  std::string why;
  if (!rt.load_scenario(source, next.get(), &hooks, &why)) return refused(400, why);

  for (const auto& spec : next->proxies)
    for (const auto& p : rt.proxies)
      if (!p->removed && !p->from_scenario && p->spec->name == spec.name)
        return refused(409, "proxy '" + spec.name + "' (" + spec.where +
                                ") was made through the control API: delete it there first");

  // Everything that can fail, before anything changes.
  const int threads = static_cast<int>(rt.workers.size());
  std::vector<std::unique_ptr<ProxyRuntime>> made;
  std::vector<ProxyRuntime*> takes_over;  // per new proxy: the listener it keeps, or null
  std::vector<std::vector<int>> fds;      // per new proxy: its bound sockets (none when it keeps a listener)
  for (const auto& spec : next->proxies) {
    auto p = make_scenario_proxy(rt, spec, next->seed, hooks, &why);
    if (!p) {
      close_fds(fds);
      return refused(400, why);
    }
    ProxyRuntime* old = listener_for(rt, spec, takes_over);
    std::vector<int> mine;
    if (!old && !bind_listeners(*p, threads, &mine, &why)) {
      close_fds(fds);
      return refused(400, "[" + spec.name + "] " + why);
    }
    takes_over.push_back(old);
    fds.push_back(std::move(mine));
    made.push_back(std::move(p));
  }

  // The swap: no step below fails.
  ReloadResult result;
  result.ok = true;
  for (size_t i = 0; i < made.size(); ++i) {
    ProxyRuntime* p = made[i].get();
    if (ProxyRuntime* old = takes_over[i]) {
      p->bound = old->bound;
      rt.workers[0]->retarget_listener(old, p);
      for (int w = 1; w < threads; ++w)
        rt.workers[static_cast<size_t>(w)]->post([old, p](Worker& worker) { worker.retarget_listener(old, p); });
      old->removed = true;
      old->enabled = false;
      result.kept.push_back(p->spec->name);
    } else {
      rt.workers[0]->listen_proxy(p, fds[i][0]);
      for (int w = 1; w < threads; ++w) {
        const int fd = fds[i][static_cast<size_t>(w)];
        rt.workers[static_cast<size_t>(w)]->post([p, fd](Worker& worker) { worker.listen_proxy(p, fd); });
      }
      spdlog::info("proxy '{}' listening on {}, upstream {} ({}, reloaded scenario)", p->spec->name, p->bound,
                   p->spec->upstream, faults::to_string(p->spec->protocol));
      result.started.push_back(p->spec->name);
    }
  }
  for (auto& p : rt.proxies) {
    if (!p->from_scenario || p->removed) continue;
    const ProxyRuntime* gone = p.get();
    rt.workers[0]->unlisten_proxy(gone, true);
    for (int w = 1; w < threads; ++w)
      rt.workers[static_cast<size_t>(w)]->post([gone](Worker& worker) { worker.unlisten_proxy(gone, true); });
    p->removed = true;
    p->enabled = false;
    result.stopped.push_back(p->spec->name);
  }
  for (auto& p : made) rt.proxies.push_back(std::move(p));
  // The old scenario's specs stay where they are (a vector's move keeps its elements in place) for the
  // connections still running them.
  rt.retired.push_back(std::make_unique<faults::Scenario>(std::move(rt.scenario)));
  rt.scenario = std::move(*next);
  rt.hooks = std::move(hooks);

  faults::Journal::Entry e;
  e["reload"] = rt.scenario.path;
  e["seed"] = rt.scenario.seed;
  rt.journal.record(e);
  spdlog::info("scenario {} reloaded (seed {}): {} proxy(ies) kept their listener, {} started, {} stopped",
               rt.scenario.path, rt.scenario.seed, result.kept.size(), result.started.size(), result.stopped.size());
  return result;
}

}  // namespace faultline::proxy
