// One line per toxic type: its attributes (Toxiproxy's names and units) and its constructor.
#include "faults/toxics/registry.h"

#include "faults/toxics/toxics.h"

namespace faultline::faults {

const std::vector<ToxicType>& toxic_types() {
  static const std::vector<ToxicType> types = {
      {"latency", {{"latency", 0, true, 0}, {"jitter", 0, false, 0}}, toxics::make_latency},
      {"bandwidth", {{"rate", 0, true, 0}}, toxics::make_bandwidth},
      {"slow_close", {{"delay", 0, true, 0}}, toxics::make_slow_close},
      {"timeout", {{"timeout", 0, false, 0}}, toxics::make_timeout},
      {"reset_peer", {{"timeout", 0, false, 0}}, toxics::make_reset_peer},
      {"slicer",
       {{"average_size", 0, true, 1}, {"size_variation", 0, false, 0}, {"delay", 0, false, 0}},
       toxics::make_slicer},
      {"limit_data", {{"bytes", 0, true, 0}}, toxics::make_limit_data},
  };
  return types;
}

const ToxicType* find_toxic_type(std::string_view type) {
  for (const auto& t : toxic_types())
    if (type == t.type) return &t;
  return nullptr;
}

}  // namespace faultline::faults
