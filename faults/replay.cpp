// Journal parsing for replay. A journal is user-edited (lines deleted to narrow a failure down), so
// every line is validated and errors name the line.
#include "faults/replay.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace faultline::faults {

ReplaySet::ReplaySet(ReplaySet&& other) noexcept {
  std::lock_guard lock(other.mu_);
  toxics_ = std::move(other.toxics_);
  rules_ = std::move(other.rules_);
}

std::optional<ReplaySet> ReplaySet::load(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open replay journal";
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path, error);
}

namespace {
bool get_ordinal(const nlohmann::json& j, uint64_t* out) {
  auto it = j.find("match");
  if (it == j.end() || !it->is_number_unsigned() || it->get<uint64_t>() == 0) return false;
  *out = it->get<uint64_t>();
  return true;
}

bool get_string(const nlohmann::json& j, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return false;
  *out = it->get<std::string>();
  return true;
}
}  // namespace

std::optional<ReplaySet> ReplaySet::parse(const std::string& text, const std::string& path, std::string* error) {
  ReplaySet set;
  std::istringstream lines(text);
  std::string line;
  int lineno = 0;
  auto fail = [&](const std::string& msg) -> std::optional<ReplaySet> {
    *error = path + ":" + std::to_string(lineno) + ": " + msg;
    return std::nullopt;
  };
  while (std::getline(lines, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return fail("not a JSON object");
    if (j.contains("expired")) continue;  // a ttl that ran out: not a fault position
    if (j.contains("reload"))
      return fail("the scenario was reloaded here (PUT /scenario or SIGHUP): a replay covers one scenario; "
                  "replay the lines before this one with the first scenario, or those after it with the new one");
    uint64_t ordinal = 0;
    if (!get_ordinal(j, &ordinal)) return fail("missing or invalid \"match\" (a positive integer)");
    std::string proxy, name, key;
    if (j.contains("toxic")) {
      if (!get_string(j, "proxy", &proxy)) return fail("toxic line without \"proxy\"");
      if (!get_string(j, "toxic", &name)) return fail("\"toxic\" must be a string");
      set.toxics_[{proxy, name, ordinal}] = Recorded{false, lineno, line};
    } else if (j.contains("rule")) {
      if (!get_string(j, "rule", &name)) return fail("\"rule\" must be a string");
      if (j.contains("key") && !get_string(j, "key", &key)) return fail("\"key\" must be a string");
      set.rules_[{name, key, ordinal}] = Recorded{false, lineno, line};
    } else {
      return fail("neither \"rule\" nor \"toxic\": not a journal line");
    }
  }
  return set;
}

bool ReplaySet::toxic_fires(const std::string& proxy, const std::string& toxic, uint64_t ordinal) {
  std::lock_guard lock(mu_);
  auto it = toxics_.find({proxy, toxic, ordinal});
  if (it == toxics_.end()) return false;
  it->second.reached = true;
  return true;
}

bool ReplaySet::rule_fires(const std::string& rule, const std::string& key, uint64_t ordinal) {
  std::lock_guard lock(mu_);
  auto it = rules_.find({rule, key, ordinal});
  if (it == rules_.end()) return false;
  it->second.reached = true;
  return true;
}

std::vector<std::string> ReplaySet::unmet() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [pos, rec] : toxics_) {
    if (rec.reached) continue;
    out.push_back("toxic '" + std::get<1>(pos) + "' of proxy '" + std::get<0>(pos) + "' on connection " +
                  std::to_string(std::get<2>(pos)));
  }
  for (const auto& [pos, rec] : rules_) {
    if (rec.reached) continue;
    std::string s = "rule '" + std::get<0>(pos) + "' at match " + std::to_string(std::get<2>(pos));
    if (!std::get<1>(pos).empty()) s += " of key '" + std::get<1>(pos) + "'";
    out.push_back(s);
  }
  return out;
}

std::vector<std::string> ReplaySet::unmet_lines() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<int, std::string>> found;
  for (const auto& [pos, rec] : toxics_)
    if (!rec.reached) found.emplace_back(rec.line_no, rec.line);
  for (const auto& [pos, rec] : rules_)
    if (!rec.reached) found.emplace_back(rec.line_no, rec.line);
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [no, line] : found) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    out.push_back(std::move(line));
  }
  return out;
}

}  // namespace faultline::faults
