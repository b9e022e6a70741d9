// What a rule's parts mean on their own: string matchers, schedules, and an action's journal form.
#include "faults/rule.h"

#include <algorithm>
#include <string>

#include "faults/lua_pattern.h"

namespace faultline::faults {

namespace {

// ASCII only: header values and SQL are bytes, and the locale must not change a match.
char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c; }

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

bool matches_as(const StringMatcher& m, std::string_view subject, bool case_insensitive) {
  switch (m.kind) {
    case StringMatcher::Kind::exact:
      return case_insensitive ? equal_ignoring_case(subject, m.text) : subject == m.text;
    case StringMatcher::Kind::prefix:
      if (subject.size() < m.text.size()) return false;
      return case_insensitive ? equal_ignoring_case(subject.substr(0, m.text.size()), m.text)
                              : subject.starts_with(m.text);
    case StringMatcher::Kind::pattern: {
      if (!case_insensitive) return lua_pattern_find(subject, m.text);
      std::string lowered(subject);
      std::transform(lowered.begin(), lowered.end(), lowered.begin(), ascii_lower);
      return lua_pattern_find(lowered, m.text);
    }
    case StringMatcher::Kind::any_of:
      // A field compared without case stays so inside any_of, whatever the loader set on the members.
      return std::any_of(m.any.begin(), m.any.end(), [&](const StringMatcher& member) {
        return matches_as(member, subject, case_insensitive || member.case_insensitive);
      });
  }
  return false;
}

}  // namespace

bool StringMatcher::matches(std::string_view subject) const { return matches_as(*this, subject, case_insensitive); }

bool Schedule::selects(uint64_t k) const {
  switch (kind) {
    case Kind::always:
      return true;
    case Kind::first:
      return k <= n;
    case Kind::nth:
      // `nth = N` may arrive as n alone or as a one-element list.
      if (nths.empty()) return k == n;
      return std::find(nths.begin(), nths.end(), k) != nths.end();
    case Kind::after:
      return k > n;
    case Kind::every:
      return n != 0 && k % n == 0;
  }
  return false;
}

const char* ActionSpec::name() const noexcept {
  switch (type) {
    case Type::pass:
      return "pass";
    case Type::delay:
      return "delay";
    case Type::hang:
      return "hang";
    case Type::drop:
      return "drop";
    case Type::reset:
      return "reset";
    case Type::respond:
      return "respond";
    case Type::truncate:
      return "truncate";
    case Type::sse_cut:
      return "sse_cut";
    case Type::sse_delay:
      return "sse_delay";
    case Type::throttle:
      return "throttle";
    case Type::delay_response:
      return "delay_response";
    case Type::redis_error:
      return "redis_error";
    case Type::redis_reply:
      return "redis_reply";
    case Type::postgres_error:
      return "postgres_error";
    case Type::postgres_fatal:
      return "postgres_fatal";
  }
  return "pass";
}

nlohmann::ordered_json ActionSpec::detail() const {
  // Only what tells two fired faults apart; bodies and headers would bloat every journal line.
  nlohmann::ordered_json d = nlohmann::ordered_json::object();
  switch (type) {
    case Type::pass:
    case Type::reset:
      break;
    case Type::delay:
      d["ms"] = ms;
      d["jitter"] = jitter;
      break;
    case Type::hang:
      if (ms != 0) d["ms"] = ms;  // 0 is "forever", the default
      break;
    case Type::drop:
      if (after_forward) d["after_forward"] = true;
      break;
    case Type::respond:
      d["status"] = status;
      break;
    case Type::truncate:
      d["bytes"] = bytes;
      break;
    case Type::sse_cut:
      d["after_events"] = after_events;
      break;
    case Type::sse_delay:
    case Type::delay_response:
      d["ms"] = ms;
      break;
    case Type::throttle:
      d["bytes_per_second"] = bytes_per_second;
      break;
    case Type::redis_error:
      d["message"] = message;
      break;
    case Type::redis_reply:
      d["value"] = value;
      break;
    case Type::postgres_error:
    case Type::postgres_fatal:
      d["sqlstate"] = sqlstate;
      d["message"] = message;
      break;
  }
  return d;
}

}  // namespace faultline::faults
