#include "proxy/toxic_decision.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>

#include <spdlog/spdlog.h>
#include <uv.h>

#include "faults/decider.h"
#include "proxy/worker.h"

namespace faultline::proxy {

namespace {

// Whether `tr` takes effect on connection `ordinal`: from the seed, or the replay set. When it does, it is
// counted and journaled.
bool decide_one(Runtime& rt, ProxyRuntime& proxy, ToxicRuntime& tr, uint64_t conn_id, uint64_t ordinal,
                const std::string& tag) {
  const faults::ToxicSpec& spec = *tr.spec;
  bool active;
  if (rt.replay) {
    active = rt.replay->toxic_fires(proxy.spec->name, spec.name, ordinal);
  } else {
    auto rng = faults::decide(proxy.seed, proxy.spec->name + "/" + spec.name, "", ordinal);
    active = rng.uniform01() < spec.toxicity;
  }
  if (!active) return false;
  tr.fired.fetch_add(1, std::memory_order_relaxed);
  faults::Journal::Entry e;
  e["proxy"] = proxy.spec->name;
  e["conn"] = conn_id;
  e["toxic"] = spec.name;
  e["type"] = spec.type;
  e["stream"] = faults::to_string(spec.stream);
  e["match"] = ordinal;
  rt.journal.record(e);
  spdlog::debug("{} toxic '{}' takes effect", tag, spec.name);
  return true;
}

// Off for new connections: removed, switched off, or past its ttl (replay does not consult ttl).
bool switched_off(const Runtime& rt, const ToxicRuntime& tr, double now_s) {  // now_s: the proxy's seconds()
  if (tr.removed || !tr.enabled.load(std::memory_order_relaxed)) return true;
  return !rt.replay && tr.spec->ttl_s && now_s >= *tr.spec->ttl_s;
}


}  // namespace

ActiveToxics decide_toxics(Runtime& rt, ProxyRuntime& proxy, uint64_t conn_id, uint64_t ordinal,
                           const std::string& tag) {
  ActiveToxics out;
  const double now_s = proxy.seconds();
  std::lock_guard lock(proxy.toxics_mu);
  for (auto& tr : proxy.toxics) {
    if (switched_off(rt, *tr, now_s) || !decide_one(rt, proxy, *tr, conn_id, ordinal, tag)) continue;
    const faults::ToxicSpec& spec = *tr->spec;
    (spec.stream == faults::Stream::upstream ? out.upstream : out.downstream).push_back(&spec);
  }
  return out;
}

// Toxiproxy's API answers once every open connection has the change (its links are changed under the
// collection's lock), so a suite can add a toxic and at once expect the next request to feel it. Here the
// calling worker (worker 0: the control API, the ttl timer) applies it at once and waits, bounded, for the
// others to have applied it on their loops. They never wait for worker 0, so this cannot deadlock.
void broadcast_toxic_change(Runtime& rt, const ToxicChange& change) {
  struct Latch {
    std::mutex mu;
    std::condition_variable cv;
    size_t left = 0;
  };
  auto latch = std::make_shared<Latch>();
  auto done = [latch] {
    std::lock_guard lock(latch->mu);
    if (--latch->left == 0) latch->cv.notify_all();
  };
  for (size_t i = 1; i < rt.workers.size(); ++i) {
    {
      std::lock_guard lock(latch->mu);
      ++latch->left;
    }
    const bool posted = rt.workers[i]->post([change, done](Worker& worker) {
      try {
        worker.apply_toxic_change(change);
      } catch (...) {
        done();
        throw;
      }
      done();
    });
    if (!posted) done();  // stopping: it has no connections to change
  }
  if (!rt.workers.empty()) rt.workers[0]->apply_toxic_change(change);
  std::unique_lock lock(latch->mu);
  if (!latch->cv.wait_for(lock, std::chrono::seconds(2), [&] { return latch->left == 0; }))
    spdlog::warn("toxic '{}' (proxy '{}'): a worker was slow to apply the change; it applies it soon",
                 change.toxic->spec->name, change.proxy->spec->name);
}

std::optional<ToxicEdit> decide_change(Runtime& rt, const ToxicChange& change, uint64_t conn_id, uint64_t ordinal,
                                       const std::string& tag,
                                       const std::function<bool(const faults::ToxicSpec*)>& active) {
  ProxyRuntime& proxy = *change.proxy;
  ToxicRuntime& tr = *change.toxic;
  const faults::ToxicSpec* spec = tr.spec;
  ToxicEdit edit;
  edit.stream = spec->stream;
  if (change.kind == ToxicChange::Kind::removed) {
    if (!active(spec)) return std::nullopt;
    edit.op = ToxicEdit::Op::remove;
    edit.old = spec;
    return edit;
  }
  // Added or changed. A connection accepted since has decided it already.
  if (active(spec)) return std::nullopt;
  const bool had_old = change.kind == ToxicChange::Kind::changed && active(change.old);
  bool now_on;
  {
    std::lock_guard lock(proxy.toxics_mu);
    if (switched_off(rt, tr, proxy.seconds())) {
      now_on = false;  // removed again before this worker got to it: a later change says so
    } else if (had_old) {
      // Already running here: the same draw decides whether it still does under its new toxicity. The
      // count and the journal already have this connection.
      if (rt.replay) {
        now_on = rt.replay->toxic_fires(proxy.spec->name, spec->name, ordinal);
      } else {
        now_on = faults::decide(proxy.seed, proxy.spec->name + "/" + spec->name, "", ordinal).uniform01() <
                 spec->toxicity;
      }
    } else {
      now_on = decide_one(rt, proxy, tr, conn_id, ordinal, tag);
    }
  }
  if (had_old) {
    edit.op = now_on ? ToxicEdit::Op::replace : ToxicEdit::Op::remove;
    edit.old = change.old;
    edit.now = now_on ? spec : nullptr;
    return edit;
  }
  if (!now_on) return std::nullopt;
  edit.op = ToxicEdit::Op::insert;
  edit.now = spec;
  return edit;
}

namespace {

// Where a stage for `spec` goes among `count` stages (spec_at(i)): after every one whose toxic comes
// before it in the proxy's list (a changed toxic's copy sits right after the one it replaced).
template <typename SpecAt>
size_t insert_position(ProxyRuntime& proxy, size_t count, SpecAt spec_at, const faults::ToxicSpec* spec) {
  std::lock_guard lock(proxy.toxics_mu);
  auto order = [&](const faults::ToxicSpec* s) {
    for (size_t i = 0; i < proxy.toxics.size(); ++i)
      if (proxy.toxics[i]->spec == s) return i;
    return proxy.toxics.size();
  };
  const size_t mine = order(spec);
  size_t pos = 0;
  while (pos < count && order(spec_at(pos)) < mine) ++pos;
  return pos;
}

}  // namespace

void apply_edit(faults::ToxicChain& chain, const ToxicEdit& edit, ProxyRuntime& proxy) {
  switch (edit.op) {
    case ToxicEdit::Op::remove:
      chain.remove(edit.old);
      break;
    case ToxicEdit::Op::replace:
      chain.replace(edit.old, *edit.now);
      break;
    case ToxicEdit::Op::insert:
      chain.insert(insert_position(proxy, chain.size(), [&](size_t i) { return chain.spec_at(i); }, edit.now),
                   *edit.now);
      break;
  }
}

void apply_edit(std::vector<const faults::ToxicSpec*>& specs, const ToxicEdit& edit, ProxyRuntime& proxy) {
  switch (edit.op) {
    case ToxicEdit::Op::remove:
      std::erase(specs, edit.old);
      break;
    case ToxicEdit::Op::replace:
      std::replace(specs.begin(), specs.end(), edit.old, edit.now);
      break;
    case ToxicEdit::Op::insert: {
      const size_t pos = insert_position(proxy, specs.size(), [&](size_t i) { return specs[i]; }, edit.now);
      specs.insert(specs.begin() + static_cast<std::ptrdiff_t>(pos), edit.now);
      break;
    }
  }
}

void expire_ttls(Runtime& rt) {
  for (auto& p : rt.proxies) {  // removed ones too: connections may still run them
    const double now_s = p->seconds();
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
      spdlog::info("toxic '{}' (proxy '{}'): its ttl of {} s is over, switched off", spec.name, p->spec->name,
                   *spec.ttl_s);
      broadcast_toxic_change(rt, {ToxicChange::Kind::removed, p.get(), tr.get(), nullptr});
    }
  }
}

int64_t fired_delay_ms(uint64_t seed, const faults::RuleEngine::Fired& fired) {
  const faults::ActionSpec& a = fired.action;
  int64_t ms = a.ms;
  if (a.jitter > 0) {
    auto rng = faults::decide(seed, fired.rule->name + "/jitter", fired.key, fired.match);
    ms += static_cast<int64_t>(std::floor(rng.uniform01() * static_cast<double>(2 * a.jitter + 1))) - a.jitter;
  }
  return std::max<int64_t>(ms, 0);
}

}  // namespace faultline::proxy
