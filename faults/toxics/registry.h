// The table of toxic types: names, attributes with defaults, and constructors.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "faults/scenario.h"
#include "faults/toxic.h"

namespace faultline::faults {

struct AttributeSpec {
  const char* name;
  int64_t default_value;
  bool required;  // a scenario must give it
  int64_t min;    // smallest accepted value
};

using ToxicFactory = std::unique_ptr<Toxic> (*)(const ToxicSpec& spec, const ToxicContext& ctx, ToxicEnv& env,
                                                ToxicOutput& out);

struct ToxicType {
  const char* type;
  std::vector<AttributeSpec> attributes;
  ToxicFactory make;
};

// Every toxic type, in a fixed order (one line per toxic in registry.cpp).
const std::vector<ToxicType>& toxic_types();
const ToxicType* find_toxic_type(std::string_view type);

}  // namespace faultline::faults
