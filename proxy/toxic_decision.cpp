#include "proxy/toxic_decision.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "faults/decider.h"

namespace faultline::proxy {

ActiveToxics decide_toxics(Runtime& rt, ProxyRuntime& proxy, uint64_t conn_id, uint64_t ordinal,
                           const std::string& tag) {
  ActiveToxics out;
  for (auto& tr : proxy.toxics) {
    const faults::ToxicSpec& spec = *tr->spec;
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
