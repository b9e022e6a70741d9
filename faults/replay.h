// Replay (SPEC §4.1): the fault positions a journal recorded, asked instead of schedules and toxicity.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace faultline::faults {

class ReplaySet {
 public:
  // Parses a journal file; on failure returns nullopt and sets *error to "FILE:LINE: message".
  static std::optional<ReplaySet> load(const std::string& path, std::string* error);
  static std::optional<ReplaySet> parse(const std::string& text, const std::string& path, std::string* error);

  ReplaySet() = default;
  ReplaySet(ReplaySet&& other) noexcept;
  ReplaySet& operator=(ReplaySet&&) = delete;

  // Did the journal record toxic `toxic` of `proxy` taking effect on connection `ordinal`?
  // Asking marks the position as reached. Thread-safe.
  bool toxic_fires(const std::string& proxy, const std::string& toxic, uint64_t ordinal);
  // Did the journal record rule `rule` firing at match `ordinal` within key value `key`?
  bool rule_fires(const std::string& rule, const std::string& key, uint64_t ordinal);

  // Recorded positions never reached, described for the report ("toxic 'x' of proxy 'p' on connection 4").
  std::vector<std::string> unmet() const;
  // The same as the journal lines that recorded them, in the journal's order.
  std::vector<std::string> unmet_lines() const;
  size_t size() const noexcept { return toxics_.size() + rules_.size(); }

 private:
  using ToxicPos = std::tuple<std::string, std::string, uint64_t>;
  using RulePos = std::tuple<std::string, std::string, uint64_t>;
  struct Recorded {
    bool reached = false;
    int line_no = 0;
    std::string line;  // as the journal has it
  };
  mutable std::mutex mu_;
  std::map<ToxicPos, Recorded> toxics_;
  std::map<RulePos, Recorded> rules_;
};

}  // namespace faultline::faults
