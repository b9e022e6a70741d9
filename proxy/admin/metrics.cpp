#include "proxy/admin/metrics.h"

#include <cstdio>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "proxy/runtime.h"

namespace faultline::proxy::admin {

namespace {

// A label value: backslash, double quote and newline escaped.
std::string escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// As Prometheus' own clients write floats: the shortest form, and "10.0" rather than "10".
std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  std::string out = buf;
  if (out.find_first_of(".eEni") == std::string::npos) out += ".0";
  return out;
}

class Writer {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // name{k="v",...} value
  void sample(const std::string& name, std::initializer_list<std::pair<const char*, std::string>> labels,
              const std::string& value) {
    out_ += name;
    if (labels.size() > 0) {
      out_ += '{';
      bool first = true;
      for (const auto& [k, v] : labels) {
        if (!first) out_ += ',';
        first = false;
        out_ += k;
        out_ += "=\"";
        out_ += escape(v);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string u(uint64_t v) { return std::to_string(v); }

// A map that keeps its keys in the order they first came: the output follows the scenario's (and the
// API's) order, and stays the same from one scrape to the next.
template <class Key, class Value>
class Ordered {
 public:
  Value& operator[](const Key& key) {
    auto [at, added] = index_.try_emplace(key, items_.size());
    if (added) items_.emplace_back(key, Value{});
    return items_[at->second].second;
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::map<Key, size_t> index_;
  std::vector<std::pair<Key, Value>> items_;
};

// Several runtime entries can carry one proxy name: one replaced through the Toxiproxy API (or by a
// reload) stays, removed, beside its replacement, since its connections may still use it. Prometheus wants
// one series per label set, and a counter that never goes back: so every counter is the sum over the
// entries of that name, and the connections still open on an old entry count as active.
struct ProxyTotals {
  // Of the newest entry of that name that speaks a protocol; "" while every one is tcp (which has no
  // messages or response latency).
  std::string protocol;
  uint64_t connections = 0, active = 0, bytes_up = 0, bytes_down = 0, messages = 0, connect_errors = 0;
  uint64_t buckets[LatencyHistogram::kBuckets + 1] = {};
  uint64_t sum_us = 0;
};

Ordered<std::string, ProxyTotals> proxy_totals(const Runtime& rt) {
  Ordered<std::string, ProxyTotals> out;
  for (const auto& p : rt.proxies) {
    ProxyTotals& t = out[p->spec->name];
    if (p->spec->protocol != faults::Protocol::tcp) t.protocol = faults::to_string(p->spec->protocol);
    t.connections += p->connections.load();
    t.active += p->active.load();
    t.bytes_up += p->bytes_up.load();
    t.bytes_down += p->bytes_down.load();
    t.messages += p->messages.load();
    t.connect_errors += p->connect_errors.load();
    for (size_t i = 0; i <= LatencyHistogram::kBuckets; ++i) t.buckets[i] += p->upstream_latency.buckets[i].load();
    t.sum_us += p->upstream_latency.sum_us.load();
  }
  return out;
}

// Per (proxy, rule), summed over the entries of that proxy name, as for ProxyTotals.
struct RuleTotals {
  uint64_t matched = 0;
  bool enabled = false;  // as the newest entry still in service has it; off when only removed ones have it
};

struct RuleSeries {
  Ordered<std::pair<std::string, std::string>, RuleTotals> rules;  // (proxy, rule)
  // (proxy, rule, action): a reload may give a rule another action; the faults each fired stay theirs.
  Ordered<std::tuple<std::string, std::string, std::string>, uint64_t> fired;
};

RuleSeries rule_series(const Runtime& rt) {
  RuleSeries out;
  for (const auto& p : rt.proxies) {
    if (!p->rules) continue;
    for (size_t i = 0; i < p->spec->rules.size(); ++i) {
      const auto& r = p->spec->rules[i];
      const auto stats = p->rules->stats(i);
      RuleTotals& t = out.rules[{p->spec->name, r.name}];
      t.matched += stats.matched;
      if (!p->removed) t.enabled = p->rules->enabled(r.name);  // entries come oldest first: the newest wins
      out.fired[{p->spec->name, r.name, r.action ? r.action->name() : "function"}] += stats.fired;
    }
  }
  return out;
}

// One series per toxic name (a toxic changed or made again through the control API adds up).
void write_toxics(Writer& w, const Runtime& rt) {
  std::map<std::tuple<std::string, std::string, std::string, std::string>, uint64_t> connections;
  std::map<std::pair<std::string, std::string>, bool> on;
  for (const auto& p : rt.proxies)
    for (const auto& t : p->toxics) {
      if (t->superseded) continue;
      connections[{p->spec->name, t->spec->name, t->spec->type, faults::to_string(t->spec->stream)}] += t->fired.load();
      bool& enabled = on[{p->spec->name, t->spec->name}];
      enabled = enabled || (!t->removed && t->enabled.load() && !t->expiry_reported.load());
    }
  w.family("faultline_toxic_connections_total", "counter", "Connections a toxic took effect on.");
  for (const auto& [key, n] : connections)
    w.sample("faultline_toxic_connections_total",
             {{"proxy", std::get<0>(key)}, {"toxic", std::get<1>(key)}, {"type", std::get<2>(key)}, {"stream", std::get<3>(key)}},
             u(n));
  w.family("faultline_toxic_enabled", "gauge", "1 while a toxic takes effect on new connections.");
  for (const auto& [key, enabled] : on)
    w.sample("faultline_toxic_enabled", {{"proxy", key.first}, {"toxic", key.second}}, enabled ? "1" : "0");
}

void write_latency(Writer& w, const Ordered<std::string, ProxyTotals>& proxies) {
  w.family("faultline_upstream_response_seconds", "histogram",
           "From a request sent upstream (or the reply before it ending) to the first byte of its reply.");
  for (const auto& [name, t] : proxies) {
    if (t.protocol.empty()) continue;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= LatencyHistogram::kBuckets; ++i) {
      cumulative += t.buckets[i];
      const std::string le = i < LatencyHistogram::kBuckets ? number(LatencyHistogram::kBounds[i]) : "+Inf";
      w.sample("faultline_upstream_response_seconds_bucket", {{"proxy", name}, {"le", le}}, u(cumulative));
    }
    w.sample("faultline_upstream_response_seconds_sum", {{"proxy", name}}, number(static_cast<double>(t.sum_us) / 1e6));
    w.sample("faultline_upstream_response_seconds_count", {{"proxy", name}}, u(cumulative));
  }
}

}  // namespace

std::string metrics_text(const Runtime& rt, double uptime_s) {
  const auto proxies = proxy_totals(rt);
  const auto rules = rule_series(rt);
  Writer w;
  w.family("faultline_uptime_seconds", "gauge", "Seconds since the proxies started.");
  w.sample("faultline_uptime_seconds", {}, number(uptime_s));
  w.family("faultline_connections_total", "counter", "Client connections accepted.");
  for (const auto& [name, t] : proxies) w.sample("faultline_connections_total", {{"proxy", name}}, u(t.connections));
  w.family("faultline_connections_active", "gauge", "Client connections open now.");
  for (const auto& [name, t] : proxies) w.sample("faultline_connections_active", {{"proxy", name}}, u(t.active));
  w.family("faultline_bytes_total", "counter",
           "Bytes read from clients (direction upstream) and from upstreams (direction downstream).");
  for (const auto& [name, t] : proxies) {
    w.sample("faultline_bytes_total", {{"proxy", name}, {"direction", "upstream"}}, u(t.bytes_up));
    w.sample("faultline_bytes_total", {{"proxy", name}, {"direction", "downstream"}}, u(t.bytes_down));
  }
  w.family("faultline_messages_total", "counter", "Requests, commands and queries offered to the rules.");
  for (const auto& [name, t] : proxies)
    if (!t.protocol.empty())
      w.sample("faultline_messages_total", {{"proxy", name}, {"protocol", t.protocol}}, u(t.messages));
  w.family("faultline_rule_matches_total", "counter", "Messages a rule matched, whether or not it fired.");
  for (const auto& [key, t] : rules.rules)
    w.sample("faultline_rule_matches_total", {{"proxy", key.first}, {"rule", key.second}}, u(t.matched));
  w.family("faultline_faults_fired_total", "counter", "Faults a rule fired, by its action.");
  for (const auto& [key, n] : rules.fired)
    w.sample("faultline_faults_fired_total",
             {{"proxy", std::get<0>(key)}, {"rule", std::get<1>(key)}, {"action", std::get<2>(key)}}, u(n));
  w.family("faultline_rule_enabled", "gauge", "1 while a rule is on (not disabled, reset or past its ttl).");
  for (const auto& [key, t] : rules.rules)
    w.sample("faultline_rule_enabled", {{"proxy", key.first}, {"rule", key.second}}, t.enabled ? "1" : "0");
  write_toxics(w, rt);
  w.family("faultline_upstream_connect_errors_total", "counter",
           "Upstream connections that could not be made (refused, unresolvable, timed out, TLS refused).");
  for (const auto& [name, t] : proxies)
    w.sample("faultline_upstream_connect_errors_total", {{"proxy", name}}, u(t.connect_errors));
  write_latency(w, proxies);
  w.family("faultline_journal_lines_total", "counter", "Journal lines recorded (fired faults and expired ttls).");
  w.sample("faultline_journal_lines_total", {}, u(rt.journal.size()));
  return w.take();
}

}  // namespace faultline::proxy::admin
