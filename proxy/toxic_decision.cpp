#include "proxy/toxic_decision.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>
#include <uv.h>

#include "faults/decider.h"

namespace faultline::proxy {

ActiveToxics decide_toxics(Runtime& rt, ProxyRuntime& proxy, uint64_t conn_id, uint64_t ordinal,
                           const std::string& tag) {
  ActiveToxics out;
  const double now_s = static_cast<double>(uv_hrtime() - rt.start_ns) / 1e9;
  std::lock_guard lock(proxy.toxics_mu);
  for (auto& tr : proxy.toxics) {
    const faults::ToxicSpec& spec = *tr->spec;
    if (tr->removed || !tr->enabled.load(std::memory_order_relaxed)) continue;
    if (!rt.replay && spec.ttl_s && now_s >= *spec.ttl_s) continue;  // switched itself off (replay: not consulted)
    bool active;
    if (rt.replay) {
      active = rt.replay->toxic_fires(proxy.spec->name, spec.name, ordinal);
    } else {
      auto rng = faults::decide(rt.scenario.seed, proxy.spec->name + "/" + spec.name, "", ordinal);
      active = rng.uniform01() < spec.toxicity;
    }
    if (!active) continue;
    tr->fired.fetch_add(1, std::memory_order_relaxed);
    faults::Journal::Entry e;
    e["proxy"] = proxy.spec->name;
    e["conn"] = conn_id;
    e["toxic"] = spec.name;
    e["type"] = spec.type;
    e["stream"] = faults::to_string(spec.stream);
    e["match"] = ordinal;
    rt.journal.record(e);
    spdlog::debug("{} toxic '{}' takes effect", tag, spec.name);
    (spec.stream == faults::Stream::upstream ? out.upstream : out.downstream).push_back(&spec);
  }
  return out;
}

void expire_ttls(Runtime& rt) {
  const double now_s = static_cast<double>(uv_hrtime() - rt.start_ns) / 1e9;
  for (auto& p : rt.proxies) {
    if (p->rules)
      for (const std::string& name : p->rules->expire_due(now_s))
        spdlog::info("rule '{}' (proxy '{}'): its ttl is over, switched off", name, p->spec->name);
    for (auto& tr : p->toxics) {
      const faults::ToxicSpec& spec = *tr->spec;
      if (tr->removed) continue;
      if (rt.replay || !spec.ttl_s || now_s < *spec.ttl_s || tr->expiry_reported.exchange(true)) continue;
      faults::Journal::Entry e;
      e["proxy"] = p->spec->name;
      e["toxic"] = spec.name;
      e["expired"] = true;
      rt.journal.record(e);
      spdlog::info("toxic '{}' (proxy '{}'): its ttl of {} s is over, switched off for new connections", spec.name,
                   p->spec->name, *spec.ttl_s);
    }
  }
}

int64_t fired_delay_ms(const Runtime& rt, const faults::RuleEngine::Fired& fired) {
  const faults::ActionSpec& a = fired.action;
  int64_t ms = a.ms;
  if (a.jitter > 0) {
    auto rng = faults::decide(rt.scenario.seed, fired.rule->name + "/jitter", fired.key, fired.match);
    ms += static_cast<int64_t>(std::floor(rng.uniform01() * static_cast<double>(2 * a.jitter + 1))) - a.jitter;
  }
  return std::max<int64_t>(ms, 0);
}

}  // namespace faultline::proxy
