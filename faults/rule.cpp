// Placeholder definitions until the rule engine lands (matching and schedules are filled in there).
#include "faults/rule.h"

namespace faultline::faults {

bool StringMatcher::matches(std::string_view subject) const { return kind == Kind::exact && subject == text; }

bool Schedule::selects(uint64_t) const { return kind == Kind::always; }

const char* ActionSpec::name() const noexcept { return "pass"; }

nlohmann::ordered_json ActionSpec::detail() const { return nlohmann::ordered_json::object(); }

}  // namespace faultline::faults
