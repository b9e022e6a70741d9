// Which of a proxy's toxics take effect on one connection (SPEC §2.4, §4): decided once per connection from
// (seed, proxy/toxic, ordinal) or the replay set, counted and journaled. Shared by tcp and http sessions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "faults/scenario.h"
#include "faults/toxic_chain.h"
#include "proxy/runtime.h"

namespace faultline::proxy {

struct ActiveToxics {
  std::vector<const faults::ToxicSpec*> upstream;    // client -> upstream
  std::vector<const faults::ToxicSpec*> downstream;  // upstream -> client
};

// The milliseconds of a fired delay action: `ms`, plus the jitter drawn from the decision's own generator
// (the same on every run of the seed).
int64_t fired_delay_ms(uint64_t seed, const faults::RuleEngine::Fired& fired);

// Rules and toxics whose ttl is over are switched off (they already act so) and say so in the log and the
// journal, once each; called periodically.
void expire_ttls(Runtime& rt);

ActiveToxics decide_toxics(Runtime& rt, ProxyRuntime& proxy, uint64_t conn_id, uint64_t ordinal,
                           const std::string& tag);

// --- toxics changed while connections are open (Toxiproxy's API acts on them at once) ---

// A toxic of `proxy` added, removed (or switched off: the kill switch, its ttl) or changed.
struct ToxicChange {
  enum class Kind { added, removed, changed };
  Kind kind = Kind::added;
  ProxyRuntime* proxy = nullptr;
  ToxicRuntime* toxic = nullptr;           // the one added or removed, or the changed copy
  const faults::ToxicSpec* old = nullptr;  // changed: the spec it takes the place of
};

// Thread-safe: every worker applies `change` to its open connections of the proxy (WorkerSession::
// apply_toxic_change), soon, on its own loop.
void broadcast_toxic_change(Runtime& rt, const ToxicChange& change);

// What a change means for one connection's stages of one direction.
struct ToxicEdit {
  enum class Op { insert, remove, replace };
  Op op = Op::insert;
  faults::Stream stream = faults::Stream::downstream;
  const faults::ToxicSpec* old = nullptr;  // remove, replace
  const faults::ToxicSpec* now = nullptr;  // insert, replace
};

// Decides `change` for one connection: `active(spec)` says whether a toxic runs on it now. A toxic that
// newly takes effect is decided from the seed (or the replay set), counted and journaled, as at connect.
std::optional<ToxicEdit> decide_change(Runtime& rt, const ToxicChange& change, uint64_t conn_id, uint64_t ordinal,
                                       const std::string& tag,
                                       const std::function<bool(const faults::ToxicSpec*)>& active);

// Applies an edit to a running chain, or to the list of specs later chains are built from: a stage goes
// in at its toxic's place in the proxy's order.
void apply_edit(faults::ToxicChain& chain, const ToxicEdit& edit, ProxyRuntime& proxy);
void apply_edit(std::vector<const faults::ToxicSpec*>& specs, const ToxicEdit& edit, ProxyRuntime& proxy);

}  // namespace faultline::proxy
