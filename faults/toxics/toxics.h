// Constructors of the seven Toxiproxy toxics (one file each), listed in registry.cpp.
#pragma once

#include "faults/toxics/registry.h"

namespace faultline::faults::toxics {

std::unique_ptr<Toxic> make_latency(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput&);
std::unique_ptr<Toxic> make_bandwidth(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput&);
std::unique_ptr<Toxic> make_slow_close(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput&);
std::unique_ptr<Toxic> make_timeout(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput&);
std::unique_ptr<Toxic> make_reset_peer(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput&);
std::unique_ptr<Toxic> make_slicer(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput&);
std::unique_ptr<Toxic> make_limit_data(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput&);

}  // namespace faultline::faults::toxics
