#include "proxy/report.h"

#include <algorithm>

#include "proxy/runtime.h"

namespace faultline::proxy {

bool RunReport::ok() const {
  for (const auto& e : expectations)
    if (!e.met) return false;
  return unreached.empty();
}

nlohmann::ordered_json RunReport::to_json() const {
  nlohmann::ordered_json j;
  j["seed"] = seed;
  j["rules"] = nlohmann::ordered_json::array();
  for (const auto& r : rules)
    j["rules"].push_back({{"proxy", r.proxy}, {"name", r.name}, {"matched", r.matched}, {"fired", r.fired}});
  j["toxics"] = nlohmann::ordered_json::array();
  for (const auto& t : toxics) j["toxics"].push_back({{"proxy", t.proxy}, {"name", t.name}, {"connections", t.connections}});
  j["expectations"] = nlohmann::ordered_json::array();
  for (const auto& e : expectations) {
    nlohmann::ordered_json x;
    x[e.toxic ? "toxic" : "rule"] = e.name;
    x["fired"] = e.fired;
    x["met"] = e.met;
    x["expected"] = {{e.op, e.count}};
    x["where"] = e.where;
    j["expectations"].push_back(std::move(x));
  }
  j["unreached"] = nlohmann::ordered_json::array();
  for (const auto& line : unreached) {
    auto parsed = nlohmann::ordered_json::parse(line, nullptr, false);
    j["unreached"].push_back(parsed.is_discarded() ? nlohmann::ordered_json(line) : parsed);
  }
  return j;
}

std::vector<RunReport::Line> RunReport::lines() const {
  std::vector<Line> out;
  out.push_back({false, "seed " + std::to_string(seed)});
  for (const auto& r : rules)
    out.push_back({false, "rule '" + r.name + "' (proxy '" + r.proxy + "'): matched " + std::to_string(r.matched) +
                              ", fired " + std::to_string(r.fired)});
  for (const auto& t : toxics)
    out.push_back({false, "toxic '" + t.name + "' (proxy '" + t.proxy + "'): took effect on " +
                              std::to_string(t.connections) + " connection(s)"});
  for (const auto& e : expectations) {
    const std::string what = std::string(e.toxic ? "toxic" : "rule") + " '" + e.name + "' " + e.op + " = " +
                             std::to_string(e.count);
    if (e.met)
      out.push_back({false, "expectation met: " + what + " (fired " + std::to_string(e.fired) + ") at " + e.where});
    else
      out.push_back({true, "expectation NOT met: " + what + " but fired " + std::to_string(e.fired) + " at " + e.where});
  }
  for (const auto& line : unreached) out.push_back({true, "replay: recorded fault never came: " + line});
  return out;
}

namespace {

// The entry of `list` for (proxy, name), added at its end the first time: first-appearance order.
template <class Entry>
Entry& entry_for(std::vector<Entry>& list, const std::string& proxy, const std::string& name) {
  auto same =
      std::find_if(list.begin(), list.end(), [&](const Entry& x) { return x.proxy == proxy && x.name == name; });
  if (same != list.end()) return *same;
  list.push_back({proxy, name});
  return list.back();
}

}  // namespace

RunReport make_report(const Runtime& rt) {
  RunReport report;
  report.seed = rt.scenario.seed;
  for (const auto& p : rt.proxies) {
    // One entry per rule name: a proxy replaced through the control API (or by a reload) stays, removed,
    // beside its replacement under the same name; what each matched and fired adds up.
    if (p->rules)
      for (size_t i = 0; i < p->spec->rules.size(); ++i) {
        const auto stats = p->rules->stats(i);
        RunReport::Rule& r = entry_for(report.rules, p->spec->name, p->spec->rules[i].name);
        r.matched += stats.matched;
        r.fired += stats.fired;
      }
    // One entry per toxic name: a toxic changed through the control API carries its count into its
    // replacement; one removed and made again adds up.
    for (const auto& t : p->toxics)
      if (!t->superseded) entry_for(report.toxics, p->spec->name, t->spec->name).connections += t->fired.load();
  }
  for (const auto& ex : rt.scenario.expects) {
    RunReport::Expectation e;
    e.toxic = ex.target == faults::ExpectSpec::Target::toxic;
    e.name = ex.name;
    e.count = ex.count;
    e.where = ex.where;
    for (const auto& p : rt.proxies) {
      if (e.toxic) {
        for (const auto& t : p->toxics)
          if (!t->superseded && t->spec->name == ex.name) e.fired += t->fired.load();
      } else if (p->rules) {
        e.fired += p->rules->stats(ex.name).fired;
      }
    }
    switch (ex.kind) {
      case faults::ExpectSpec::Kind::exactly:
        e.op = "fired";
        e.met = e.fired == ex.count;
        break;
      case faults::ExpectSpec::Kind::at_least:
        e.op = "fired_at_least";
        e.met = e.fired >= ex.count;
        break;
      case faults::ExpectSpec::Kind::at_most:
        e.op = "fired_at_most";
        e.met = e.fired <= ex.count;
        break;
    }
    report.expectations.push_back(std::move(e));
  }
  if (rt.replay) report.unreached = rt.replay->unmet_lines();
  return report;
}

}  // namespace faultline::proxy
