// Which of a proxy's toxics take effect on one connection (SPEC §2.4, §4): decided once per connection from
// (seed, proxy/toxic, ordinal) or the replay set, counted and journaled. Shared by tcp and http sessions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "faults/scenario.h"
#include "proxy/runtime.h"

namespace faultline::proxy {

struct ActiveToxics {
  std::vector<const faults::ToxicSpec*> upstream;    // client -> upstream
  std::vector<const faults::ToxicSpec*> downstream;  // upstream -> client
};

// The milliseconds of a fired delay action: `ms`, plus the jitter drawn from the decision's own generator
// (the same on every run of the seed).
int64_t fired_delay_ms(const Runtime& rt, const faults::RuleEngine::Fired& fired);

// Rules and toxics whose ttl is over are switched off (they already act so) and say so in the log and the
// journal, once each; called periodically.
void expire_ttls(Runtime& rt);

ActiveToxics decide_toxics(Runtime& rt, ProxyRuntime& proxy, uint64_t conn_id, uint64_t ordinal,
                           const std::string& tag);

}  // namespace faultline::proxy
