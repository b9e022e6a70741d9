#include "proxy/admin/metrics.h"

#include <cstdio>
#include <map>
#include <tuple>

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

}  // namespace

std::string metrics_text(const Runtime& rt, double uptime_s) {
  Writer w;
  w.family("faultline_uptime_seconds", "gauge", "Seconds since the proxies started.");
  w.sample("faultline_uptime_seconds", {}, number(uptime_s));
  w.family("faultline_connections_total", "counter", "Client connections accepted.");
  for (const auto& p : rt.proxies) w.sample("faultline_connections_total", {{"proxy", p->spec->name}}, u(p->connections.load()));
  w.family("faultline_connections_active", "gauge", "Client connections open now.");
  for (const auto& p : rt.proxies) w.sample("faultline_connections_active", {{"proxy", p->spec->name}}, u(p->active.load()));
  w.family("faultline_bytes_total", "counter",
           "Bytes read from clients (direction upstream) and from upstreams (direction downstream).");
  for (const auto& p : rt.proxies) {
    w.sample("faultline_bytes_total", {{"proxy", p->spec->name}, {"direction", "upstream"}}, u(p->bytes_up.load()));
    w.sample("faultline_bytes_total", {{"proxy", p->spec->name}, {"direction", "downstream"}}, u(p->bytes_down.load()));
  }
  w.family("faultline_messages_total", "counter", "Requests, commands and queries offered to the rules.");
  for (const auto& p : rt.proxies)
    if (p->spec->protocol != faults::Protocol::tcp)
      w.sample("faultline_messages_total", {{"proxy", p->spec->name}, {"protocol", faults::to_string(p->spec->protocol)}},
               u(p->messages.load()));
  w.family("faultline_rule_matches_total", "counter", "Messages a rule matched, whether or not it fired.");
  for (const auto& p : rt.proxies)
    if (p->rules)
      for (size_t i = 0; i < p->spec->rules.size(); ++i)
        w.sample("faultline_rule_matches_total", {{"proxy", p->spec->name}, {"rule", p->spec->rules[i].name}},
                 u(p->rules->stats(i).matched));
  w.family("faultline_faults_fired_total", "counter", "Faults a rule fired, by its action.");
  for (const auto& p : rt.proxies)
    if (p->rules)
      for (size_t i = 0; i < p->spec->rules.size(); ++i) {
        const auto& r = p->spec->rules[i];
        w.sample("faultline_faults_fired_total",
                 {{"proxy", p->spec->name}, {"rule", r.name}, {"action", r.action ? r.action->name() : "function"}},
                 u(p->rules->stats(i).fired));
      }
  w.family("faultline_rule_enabled", "gauge", "1 while a rule is on (not disabled, reset or past its ttl).");
  for (const auto& p : rt.proxies)
    if (p->rules)
      for (const auto& r : p->spec->rules)
        w.sample("faultline_rule_enabled", {{"proxy", p->spec->name}, {"rule", r.name}}, p->rules->enabled(r.name) ? "1" : "0");
  // One series per toxic name (a toxic changed or made again through the control API adds up).
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
  w.family("faultline_upstream_connect_errors_total", "counter",
           "Upstream connections that could not be made (refused, unresolvable, timed out, TLS refused).");
  for (const auto& p : rt.proxies)
    w.sample("faultline_upstream_connect_errors_total", {{"proxy", p->spec->name}}, u(p->connect_errors.load()));
  w.family("faultline_upstream_response_seconds", "histogram",
           "From a request sent upstream (or the reply before it ending) to the first byte of its reply.");
  for (const auto& p : rt.proxies) {
    if (p->spec->protocol == faults::Protocol::tcp) continue;
    const LatencyHistogram& h = p->upstream_latency;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= LatencyHistogram::kBuckets; ++i) {
      cumulative += h.buckets[i].load();
      w.sample("faultline_upstream_response_seconds_bucket",
               {{"proxy", p->spec->name}, {"le", i < LatencyHistogram::kBuckets ? number(LatencyHistogram::kBounds[i]) : "+Inf"}},
               u(cumulative));
    }
    w.sample("faultline_upstream_response_seconds_sum", {{"proxy", p->spec->name}},
             number(static_cast<double>(h.sum_us.load()) / 1e6));
    w.sample("faultline_upstream_response_seconds_count", {{"proxy", p->spec->name}}, u(cumulative));
  }
  w.family("faultline_journal_lines_total", "counter", "Journal lines recorded (fired faults and expired ttls).");
  w.sample("faultline_journal_lines_total", {}, u(rt.journal.size()));
  return w.take();
}

}  // namespace faultline::proxy::admin
