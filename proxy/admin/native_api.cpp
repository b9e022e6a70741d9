#include "proxy/admin/native_api.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "proxy/reload.h"
#include "proxy/report.h"
#include "proxy/runtime.h"
#include "proxy/toxic_decision.h"

namespace faultline::proxy::admin {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kPrefix = "/faultline/v1";

Response json(int status, const Json& body) { return {status, body.dump() + "\n", "application/json"}; }

Json proxy_json(const ProxyRuntime& p) {
  Json j;
  j["name"] = p.spec->name;
  j["protocol"] = faults::to_string(p.spec->protocol);
  j["listen"] = p.bound;
  j["upstream"] = p.spec->upstream;
  j["connections"] = p.connections.load(std::memory_order_relaxed);
  j["active"] = p.active.load(std::memory_order_relaxed);
  j["toxics"] = Json::array();
  for (const auto& t : p.toxics) {
    if (t->removed) continue;
    Json tj;
    tj["name"] = t->spec->name;
    tj["type"] = t->spec->type;
    tj["stream"] = faults::to_string(t->spec->stream);
    tj["toxicity"] = t->spec->toxicity;
    tj["attributes"] = t->spec->attributes;
    tj["enabled"] = t->enabled.load(std::memory_order_relaxed);
    tj["connections"] = t->fired.load(std::memory_order_relaxed);
    if (t->spec->ttl_s) tj["ttl"] = *t->spec->ttl_s;
    j["toxics"].push_back(std::move(tj));
  }
  j["rules"] = Json::array();
  for (const auto& r : p.spec->rules) j["rules"].push_back(r.name);
  return j;
}

Json rule_json(const ProxyRuntime& p, size_t i) {
  const faults::RuleSpec& r = p.spec->rules[i];
  const auto stats = p.rules->stats(i);
  Json j;
  j["name"] = r.name;
  j["proxy"] = p.spec->name;
  j["enabled"] = p.rules->enabled(r.name);
  j["matched"] = stats.matched;
  j["fired"] = stats.fired;
  j["action"] = r.action ? r.action->name() : "function";
  if (r.ttl_s) j["ttl"] = *r.ttl_s;
  j["where"] = r.where;
  return j;
}

// The proxy and index of the rule called `name`, or {nullptr, 0}.
std::pair<ProxyRuntime*, size_t> find_rule(Runtime& rt, const std::string& name) {
  for (auto& p : rt.proxies) {
    if (!p->rules || p->removed) continue;
    for (size_t i = 0; i < p->spec->rules.size(); ++i)
      if (p->spec->rules[i].name == name) return {p.get(), i};
  }
  return {nullptr, 0};
}

Response journal(const Request& req, Runtime& rt) {
  uint64_t since = 0;
  for (const auto& [k, v] : req.query) {
    if (k != "since") continue;
    try {
      size_t used = 0;
      if (v.empty() || v[0] == '-') throw std::invalid_argument("negative");
      since = std::stoull(v, &used);
      if (used != v.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      return error(400, "since must be a non-negative integer (a journal seq), got '" + v + "'");
    }
  }
  Json lines = Json::array();
  uint64_t last = since;
  for (const std::string& line : rt.journal.since(since)) {
    Json j = Json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    last = j.value("seq", last);
    lines.push_back(std::move(j));
  }
  const uint64_t first = rt.journal.first_kept();
  Json body;
  body["lines"] = std::move(lines);
  body["next"] = last;  // pass as ?since= to get what comes after
  body["dropped"] = since + 1 < first ? first - since - 1 : 0;  // lines after `since` no longer kept in memory
  return json(200, body);
}

Response set_rule(const std::string& name, bool enable, const Request& req, Runtime& rt) {
  auto [p, index] = find_rule(rt, name);
  if (!p) return error(404, "no rule named '" + name + "'");
  const double now_s = p->seconds();  // the rule's clock: from when its scenario was loaded
  std::optional<double> ttl;
  if (!req.body.empty()) {
    Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return error(400, "the body must be a JSON object, e.g. {\"ttl\": 60}");
    for (const auto& [k, v] : body.items()) {
      if (k != "ttl") return error(400, "unknown field '" + k + "' (only \"ttl\" may be set)");
      if (!enable) return error(400, "ttl applies to enable");
      if (!v.is_number() || !(v.get<double>() > 0.0)) return error(400, "ttl must be a positive number of seconds");
      ttl = v.get<double>();
    }
  }
  if (ttl) {
    // A ttl given here replaces the scenario's for this rule: it is kept beside the rule's state.
    p->rules->set_enabled(name, true, now_s, *ttl);
  } else {
    p->rules->set_enabled(name, enable, now_s);
  }
  spdlog::info("control API: rule '{}' (proxy '{}') {}{}", name, p->spec->name, enable ? "enabled" : "disabled",
               ttl ? " for " + std::to_string(*ttl) + " s" : "");
  return json(200, rule_json(*p, index));
}

}  // namespace

Response error(int status, const std::string& message) {
  Json j;
  j["error"] = message;
  j["status"] = status;
  return json(status, j);
}

Response native(const Request& req, Runtime& rt) {
  const std::string path = req.path.substr(kPrefix.size());
  const bool get = req.method == "GET";
  const bool post = req.method == "POST";
  if (path == "/proxies" || path == "/proxies/") {
    if (!get) return error(405, req.method + " " + req.path + ": use GET");
    Json out = Json::array();
    for (const auto& p : rt.proxies)
      if (!p->removed) out.push_back(proxy_json(*p));
    return json(200, out);
  }
  if (path == "/rules" || path == "/rules/") {
    if (!get) return error(405, req.method + " " + req.path + ": use GET");
    Json out = Json::array();
    for (const auto& p : rt.proxies)
      if (p->rules && !p->removed)
        for (size_t i = 0; i < p->spec->rules.size(); ++i) out.push_back(rule_json(*p, i));
    return json(200, out);
  }
  if (path.rfind("/rules/", 0) == 0) {
    const std::string rest = path.substr(7);
    const auto slash = rest.find('/');
    const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (verb != "enable" && verb != "disable")
      return error(404, "no such endpoint: " + req.method + " " + req.path +
                            " (POST /faultline/v1/rules/NAME/enable or /disable)");
    if (!post) return error(405, req.method + " " + req.path + ": use POST");
    return set_rule(rest.substr(0, slash), verb == "enable", req, rt);
  }
  if (path == "/journal") {
    if (!get) return error(405, req.method + " " + req.path + ": use GET");
    return journal(req, rt);
  }
  if (path == "/scenario") {
    if (req.method != "PUT") return error(405, req.method + " " + req.path + ": use PUT with the scenario's Lua source");
    if (req.body.empty()) return error(400, "the body must be the scenario's Lua source");
    const ReloadResult r = reload_scenario(rt, &req.body);
    if (!r.ok) {
      spdlog::warn("control API: reload refused, the running scenario stays: {}", r.error);
      return error(r.status, r.error);
    }
    Json body;
    body["scenario"] = rt.scenario.path;
    body["seed"] = rt.scenario.seed;
    body["kept"] = r.kept;
    body["started"] = r.started;
    body["stopped"] = r.stopped;
    return json(200, body);
  }
  if (path == "/reset") {
    if (!post) return error(405, req.method + " " + req.path + ": use POST");
    size_t rules = 0, toxics = 0;
    // Proxies a reload replaced too: connections opened before it still run their rules and toxics.
    for (auto& p : rt.proxies) {
      if (p->rules)
        for (const auto& r : p->spec->rules)
          if (p->rules->set_enabled(r.name, false) && !p->removed) ++rules;
      for (auto& t : p->toxics) {
        if (t->removed || !t->enabled.exchange(false)) continue;
        broadcast_toxic_change(rt, {ToxicChange::Kind::removed, p.get(), t.get(), nullptr});
        if (!p->removed) ++toxics;
      }
    }
    spdlog::warn("control API: reset, {} rule(s) and {} toxic(s) switched off", rules, toxics);
    Json body;
    body["rules_disabled"] = rules;
    body["toxics_disabled"] = toxics;
    return json(200, body);
  }
  if (path == "/expectations") {
    if (!get) return error(405, req.method + " " + req.path + ": use GET");
    return json(200, make_report(rt).to_json()["expectations"]);
  }
  if (path == "/report") {
    if (!get) return error(405, req.method + " " + req.path + ": use GET");
    return json(200, make_report(rt).to_json());
  }
  return error(404, "no such endpoint: " + req.method + " " + req.path);
}

}  // namespace faultline::proxy::admin
