// The run report (SPEC §4.2): the seed in force, per rule how often it matched and fired, per toxic how many
// connections it took effect on, every expectation met or not, and every replayed fault that never came.
// Printed by `faultline run` after CMD exits, logged at shutdown otherwise, and written as JSON with
// --report-json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace faultline::proxy {

struct Runtime;

struct RunReport {
  struct Rule {
    std::string proxy, name;
    uint64_t matched = 0, fired = 0;
  };
  struct Toxic {
    std::string proxy, name;
    uint64_t connections = 0;
  };
  struct Expectation {
    bool toxic = false;  // names a toxic (else a rule)
    std::string name;
    std::string op;      // "fired", "fired_at_least" or "fired_at_most"
    uint64_t count = 0;  // what the scenario expects
    uint64_t fired = 0;  // what happened
    bool met = false;
    std::string where;   // FILE:LINE of the expect
  };

  uint64_t seed = 0;
  std::vector<Rule> rules;
  std::vector<Toxic> toxics;
  std::vector<Expectation> expectations;
  std::vector<std::string> unreached;  // journal lines of replayed faults whose position never came

  // Every expectation met and every replayed fault came.
  bool ok() const;
  nlohmann::ordered_json to_json() const;
  // Human-readable lines, for the terminal (`run`) or the log; `bad` marks an unmet expectation or an
  // unreached replayed fault.
  struct Line {
    bool bad = false;
    std::string text;
  };
  std::vector<Line> lines() const;
};

RunReport make_report(const Runtime& rt);

}  // namespace faultline::proxy
