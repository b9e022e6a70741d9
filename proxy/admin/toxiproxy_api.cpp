#include "proxy/admin/toxiproxy_api.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "faults/address.h"
#include "faults/toxics/registry.h"
#include "proxy/runtime.h"
#include "proxy/server.h"
#include "proxy/toxic_decision.h"
#include "proxy/worker.h"

namespace faultline::proxy::admin {

namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kVersion = "2.12.0";  // the Toxiproxy API version whose shapes are served

Response json(int status, const Json& body) { return {status, body.dump(), "application/json"}; }

Json toxic_json(const ToxicRuntime& t) {
  Json j;
  j["attributes"] = t.spec->attributes;
  j["name"] = t.spec->name;
  j["type"] = t.spec->type;
  j["stream"] = faults::to_string(t.spec->stream);
  j["toxicity"] = t.spec->toxicity;
  return j;
}

bool listed(const ToxicRuntime& t) { return !t.removed && t.enabled.load(); }

// As Toxiproxy lists them: the upstream toxics, then the downstream ones, each in the order made.
Json toxics_json(const ProxyRuntime& p) {
  Json out = Json::array();
  for (auto stream : {faults::Stream::upstream, faults::Stream::downstream})
    for (const auto& t : p.toxics)
      if (listed(*t) && t->spec->stream == stream) out.push_back(toxic_json(*t));
  return out;
}

ToxicRuntime* find_toxic(ProxyRuntime& p, const std::string& name) {
  for (auto& t : p.toxics)
    if (listed(*t) && t->spec->name == name) return t.get();
  return nullptr;
}

// The attributes of a toxic of `type`: those given (integers, at least the type's minimum), the others
// at their defaults. Unknown attributes are ignored, as Toxiproxy's decoder does.
std::optional<Response> read_attributes(const Json& given, const faults::ToxicType& type,
                                        std::map<std::string, int64_t>* out) {
  if (!given.is_null() && !given.is_object()) return error(400, "bad request body: \"attributes\" must be an object");
  for (const auto& a : type.attributes) {
    if (!out->count(a.name)) (*out)[a.name] = a.default_value;
    if (!given.is_object() || !given.contains(a.name)) continue;
    const Json& v = given[a.name];
    if (!v.is_number() || (v.is_number_float() && v.get<double>() != static_cast<double>(static_cast<int64_t>(v.get<double>()))))
      return error(400, std::string("bad request body: attribute '") + a.name + "' must be an integer");
    const int64_t n = v.is_number_float() ? static_cast<int64_t>(v.get<double>()) : v.get<int64_t>();
    if (n < a.min)
      return error(400, std::string("bad request body: attribute '") + a.name + "' must be >= " + std::to_string(a.min));
    (*out)[a.name] = n;
  }
  return std::nullopt;
}

std::optional<Response> read_toxicity(const Json& body, double* toxicity) {
  if (!body.contains("toxicity")) return std::nullopt;
  const Json& v = body["toxicity"];
  if (!v.is_number() || v.get<double>() < 0.0 || v.get<double>() > 1.0)
    return error(400, "bad request body: toxicity must be a number between 0 and 1");
  *toxicity = v.get<double>();
  return std::nullopt;
}

Response create_toxic(const Request& req, Runtime& rt, ProxyRuntime& p) {
  const Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return error(400, "bad request body: not a JSON object");
  for (const char* k : {"name", "type", "stream"})
    if (body.contains(k) && !body[k].is_string()) return error(400, std::string("bad request body: \"") + k + "\" must be a string");
  auto spec = std::make_unique<faults::ToxicSpec>();
  spec->type = body.value("type", "");
  const std::string stream = body.value("stream", "downstream");
  const auto parsed = faults::stream_from(stream);
  if (!parsed) return error(400, "stream was invalid, can be either upstream or downstream");
  spec->stream = *parsed;
  spec->name = body.value("name", "");
  if (spec->name.empty()) spec->name = spec->type + "_" + stream;
  const faults::ToxicType* type = faults::find_toxic_type(spec->type);
  if (!type) return error(400, "invalid toxic type");
  if (find_toxic(p, spec->name)) return error(409, "toxic already exists");
  if (auto bad = read_toxicity(body, &spec->toxicity)) return *bad;
  if (auto bad = read_attributes(body.contains("attributes") ? body["attributes"] : Json(), *type, &spec->attributes))
    return *bad;
  spec->where = "control API";
  auto t = std::make_unique<ToxicRuntime>();
  t->spec = spec.get();
  t->owned_spec = std::move(spec);
  const Json out = toxic_json(*t);
  spdlog::info("proxy '{}': toxic '{}' added (control API)", p.spec->name, t->spec->name);
  ToxicRuntime* added = t.get();
  {
    std::lock_guard lock(p.toxics_mu);
    p.toxics.push_back(std::move(t));
  }
  broadcast_toxic_change(rt, {ToxicChange::Kind::added, &p, added, nullptr});
  return json(200, out);
}

// Attributes given are changed, the others kept; toxicity likewise. The changed toxic takes the old one's
// place (and count); the old one stays in memory for the connections that run it.
Response update_toxic(const Request& req, Runtime& rt, ProxyRuntime& p, ToxicRuntime& old) {
  const Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return error(400, "bad request body: not a JSON object");
  auto spec = std::make_unique<faults::ToxicSpec>(*old.spec);
  if (auto bad = read_toxicity(body, &spec->toxicity)) return *bad;
  if (auto bad = read_attributes(body.contains("attributes") ? body["attributes"] : Json(),
                                 *faults::find_toxic_type(spec->type), &spec->attributes))
    return *bad;
  spec->where = "control API";
  auto t = std::make_unique<ToxicRuntime>();
  t->spec = spec.get();
  t->owned_spec = std::move(spec);
  t->fired.store(old.fired.load());
  const Json out = toxic_json(*t);
  ToxicRuntime* changed = t.get();
  {
    std::lock_guard lock(p.toxics_mu);
    old.removed = old.superseded = true;
    for (auto it = p.toxics.begin(); it != p.toxics.end(); ++it)
      if (it->get() == &old) {
        p.toxics.insert(it + 1, std::move(t));
        break;
      }
  }
  broadcast_toxic_change(rt, {ToxicChange::Kind::changed, &p, changed, old.spec});
  spdlog::info("proxy '{}': toxic '{}' changed (control API)", p.spec->name, old.spec->name);
  return json(200, out);
}

// Gone for new connections and, soon, from the open ones (each worker lets go of what it holds).
void remove_toxic(Runtime& rt, ProxyRuntime& p, ToxicRuntime& t) {
  {
    std::lock_guard lock(p.toxics_mu);
    if (t.removed) return;
    t.removed = true;
  }
  broadcast_toxic_change(rt, {ToxicChange::Kind::removed, &p, &t, nullptr});
}

Json proxy_json(const ProxyRuntime& p) {
  Json j;
  j["name"] = p.spec->name;
  j["listen"] = p.enabled && !p.bound.empty() ? p.bound : !p.rebind.empty() ? p.rebind : p.spec->listen;
  j["upstream"] = p.spec->upstream;
  j["enabled"] = p.enabled;
  j["toxics"] = toxics_json(p);
  return j;
}

ProxyRuntime* find(Runtime& rt, const std::string& name) {
  for (auto& p : rt.proxies)
    if (!p->removed && p->spec->name == name) return p.get();
  return nullptr;
}

// Listens on every worker (the kernel queues connections from the moment the sockets are bound).
bool start(Runtime& rt, ProxyRuntime& p, std::string* why) {
  if (p.enabled && !p.bound.empty()) return true;
  std::vector<int> fds;
  if (!bind_listeners(p, static_cast<int>(rt.workers.size()), &fds, why)) return false;
  // Worker 0 is this thread (the control API's loop): directly; the others through their task queues.
  rt.workers[0]->listen_proxy(&p, fds[0]);
  for (size_t i = 1; i < rt.workers.size(); ++i) {
    const int fd = fds[i];
    ProxyRuntime* proxy = &p;
    rt.workers[i]->post([proxy, fd](Worker& w) { w.listen_proxy(proxy, fd); });
  }
  p.enabled = true;
  // As Toxiproxy does: the address really bound becomes the proxy's listen, so a restart keeps the port.
  if (p.owned_spec) p.owned_spec->listen = p.bound;
  spdlog::info("proxy '{}' listening on {}, upstream {} (control API)", p.spec->name, p.bound, p.spec->upstream);
  return true;
}

// Stops listening and closes its connections (Toxiproxy's enabled = false).
void stop(Runtime& rt, ProxyRuntime& p) {
  if (!p.enabled) return;
  // Worker 0 directly, so its socket is closed before a replacement binds the same address (the other
  // workers' sockets share the port with SO_REUSEPORT).
  const ProxyRuntime* proxy = &p;
  rt.workers[0]->unlisten_proxy(proxy, true);
  for (size_t i = 1; i < rt.workers.size(); ++i)
    rt.workers[i]->post([proxy](Worker& worker) { worker.unlisten_proxy(proxy, true); });
  p.enabled = false;
  if (!p.bound.empty()) p.rebind = p.bound;
  p.bound.clear();
  spdlog::info("proxy '{}' stopped (control API)", p.spec->name);
}

struct ProxyInput {
  std::string name, listen, upstream;
  std::optional<bool> enabled;
};

// One proxy object of a request body; an ApiError-shaped response when it is not one.
std::optional<Response> read_proxy(const Json& j, ProxyInput* in, const std::string& at) {
  if (!j.is_object()) return error(400, "bad request body: expected a JSON object" + at);
  for (const auto& [k, v] : j.items()) {
    if (k == "name" || k == "listen" || k == "upstream") {
      if (!v.is_string()) return error(400, "bad request body: \"" + k + "\" must be a string" + at);
      (k == "name" ? in->name : k == "listen" ? in->listen : in->upstream) = v.get<std::string>();
    } else if (k == "enabled") {
      if (!v.is_boolean()) return error(400, "bad request body: \"enabled\" must be true or false" + at);
      in->enabled = v.get<bool>();
    }  // other fields (e.g. "toxics" in a GET answer sent back) are ignored, as Toxiproxy's decoder does
  }
  return std::nullopt;
}

std::optional<Response> check_address(const std::string& field, const std::string& value) {
  std::string why;
  if (!faults::parse_host_port(value, &why)) return error(400, "bad request body: " + field + " '" + value + "': " + why);
  return std::nullopt;
}

// A tcp proxy made through the API.
ProxyRuntime* make_proxy(Runtime& rt, const ProxyInput& in) {
  auto p = std::make_unique<ProxyRuntime>();
  p->owned_spec = std::make_unique<faults::ProxySpec>();
  p->owned_spec->name = in.name;
  p->owned_spec->listen = in.listen.empty() ? "127.0.0.1:0" : in.listen;
  p->owned_spec->upstream = in.upstream;
  p->owned_spec->protocol = faults::Protocol::tcp;
  p->owned_spec->where = "control API";
  p->spec = p->owned_spec.get();
  p->seed = rt.scenario.seed;  // its toxics are decided from the running scenario's seed
  p->start_ns = uv_hrtime();
  std::string why;
  p->upstream = *faults::parse_host_port(in.upstream, &why);
  p->enabled = false;
  rt.proxies.push_back(std::move(p));
  return rt.proxies.back().get();
}

// Replaces `old` by a proxy with new listen/upstream: the old one stops (its connections close) and is
// kept in memory; its toxics go on in the new one.
ProxyRuntime* replace(Runtime& rt, ProxyRuntime& old, const ProxyInput& in) {
  stop(rt, old);
  old.removed = true;
  ProxyRuntime* p = make_proxy(rt, in);
  for (auto& t : old.toxics) {
    if (t->removed) continue;
    auto copy = std::make_unique<ToxicRuntime>();
    copy->spec = t->spec;  // (the old proxy keeps its toxics, and their specs, in memory)
    t->superseded = true;  // its count goes on in the copy
    copy->fired.store(t->fired.load());
    copy->enabled.store(t->enabled.load());
    p->toxics.push_back(std::move(copy));
  }
  return p;
}

bool differs(const ProxyRuntime& p, const ProxyInput& in) {
  return (!in.listen.empty() && in.listen != p.spec->listen && in.listen != p.bound && in.listen != p.rebind) ||
         (!in.upstream.empty() && in.upstream != p.spec->upstream);
}

Response create(const Request& req, Runtime& rt) {
  const Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded()) return error(400, "bad request body: not JSON");
  ProxyInput in;
  if (auto bad = read_proxy(body, &in, "")) return *bad;
  if (in.name.empty()) return error(400, "missing required field: name");
  if (in.upstream.empty()) return error(400, "missing required field: upstream");
  if (auto bad = check_address("upstream", in.upstream)) return *bad;
  if (!in.listen.empty())
    if (auto bad = check_address("listen", in.listen)) return *bad;
  if (find(rt, in.name)) return error(409, "proxy already exists");
  ProxyRuntime* p = make_proxy(rt, in);
  std::string why;
  if (in.enabled.value_or(true) && !start(rt, *p, &why)) {
    p->removed = true;
    return error(500, "listen " + p->spec->listen + ": " + why);
  }
  return json(201, proxy_json(*p));
}

Response update(const Request& req, Runtime& rt, ProxyRuntime& p) {
  const Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded()) return error(400, "bad request body: not JSON");
  ProxyInput in;
  if (auto bad = read_proxy(body, &in, "")) return *bad;
  in.name = p.spec->name;
  if (!in.listen.empty())
    if (auto bad = check_address("listen", in.listen)) return *bad;
  if (!in.upstream.empty())
    if (auto bad = check_address("upstream", in.upstream)) return *bad;
  ProxyRuntime* target = &p;
  const bool was_enabled = p.enabled;
  if (differs(p, in)) {
    if (p.spec->protocol != faults::Protocol::tcp)
      return error(400, "proxy '" + p.spec->name + "' is a " + faults::to_string(p.spec->protocol) +
                            " proxy of the scenario: change its listen or upstream in the scenario");
    ProxyInput full = in;
    // Only the upstream changes: it stays on the port it has (even one it got from port 0), as in Toxiproxy.
    if (full.listen.empty()) full.listen = !p.bound.empty() ? p.bound : !p.rebind.empty() ? p.rebind : p.spec->listen;
    if (full.upstream.empty()) full.upstream = p.spec->upstream;
    target = replace(rt, p, full);
  }
  std::string why;
  if (in.enabled.value_or(was_enabled)) {
    if (!start(rt, *target, &why)) return error(500, "listen " + target->spec->listen + ": " + why);
  } else {
    stop(rt, *target);
  }
  return json(200, proxy_json(*target));
}

Response populate(const Request& req, Runtime& rt) {
  const Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded()) return error(400, "bad request body: not JSON");
  const Json& list = body.is_object() && body.contains("proxies") ? body["proxies"] : body;
  if (!list.is_array()) return error(400, "bad request body: expected an array of proxies");
  std::vector<ProxyInput> inputs(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = " at proxy " + std::to_string(i + 1);
    if (auto bad = read_proxy(list[i], &inputs[i], at)) return *bad;
    if (inputs[i].name.empty()) return error(400, "missing required field: name" + at);
    if (inputs[i].upstream.empty()) return error(400, "missing required field: upstream" + at);
    if (auto bad = check_address("upstream", inputs[i].upstream)) return *bad;
    if (!inputs[i].listen.empty())
      if (auto bad = check_address("listen", inputs[i].listen)) return *bad;
  }
  Json done = Json::array();
  for (const ProxyInput& in : inputs) {
    ProxyRuntime* p = find(rt, in.name);
    if (p && !differs(*p, in)) {  // the same proxy: left as it is
      done.push_back(proxy_json(*p));
      continue;
    }
    if (p && p->spec->protocol != faults::Protocol::tcp) {
      Json err = Json::parse(error(400, "proxy '" + in.name + "' is a " + faults::to_string(p->spec->protocol) +
                                            " proxy of the scenario: change it in the scenario").body);
      err["proxies"] = done;
      return json(400, err);
    }
    ProxyRuntime* target = p ? replace(rt, *p, in) : make_proxy(rt, in);
    std::string why;
    if (in.enabled.value_or(true) && !start(rt, *target, &why)) {
      target->removed = true;
      Json err = Json::parse(error(500, "listen " + target->spec->listen + ": " + why).body);
      err["proxies"] = done;
      return json(500, err);
    }
    done.push_back(proxy_json(*target));
  }
  Json out;
  out["proxies"] = done;
  return json(201, out);
}

}  // namespace

bool is_toxiproxy_path(const std::string& path) {
  return path == "/proxies" || path.rfind("/proxies/", 0) == 0 || path == "/populate" || path == "/reset" ||
         path == "/version";
}

Response toxiproxy(const Request& req, Runtime& rt) {
  const std::string& path = req.path;
  const std::string& m = req.method;
  auto not_allowed = [&] { return error(405, m + " " + path + " is not a Toxiproxy API call"); };
  if (path == "/version") {
    if (m != "GET") return not_allowed();
    return {200, std::string("{\"version\": \"") + kVersion + "\"}\n", "application/json;charset=utf-8"};
  }
  if (path == "/reset") {
    if (m != "POST") return not_allowed();
    for (auto& p : rt.proxies) {
      if (p->removed) continue;
      std::string why;
      if (!p->enabled && !start(rt, *p, &why)) return error(500, "listen " + p->spec->listen + ": " + why);
      for (auto& t : p->toxics) remove_toxic(rt, *p, *t);
    }
    spdlog::info("control API (Toxiproxy): reset: every proxy enabled, every toxic removed");
    return {204, "", "application/json"};
  }
  if (path == "/populate") {
    if (m != "POST") return not_allowed();
    return populate(req, rt);
  }
  if (path == "/proxies") {
    if (m == "GET") {
      Json out = Json::object();
      for (const auto& p : rt.proxies)
        if (!p->removed) out[p->spec->name] = proxy_json(*p);
      return json(200, out);
    }
    if (m == "POST") return create(req, rt);
    return not_allowed();
  }
  // /proxies/{proxy}[/toxics[/{toxic}]]
  const std::string rest = path.substr(9);
  const auto slash = rest.find('/');
  const std::string name = rest.substr(0, slash);
  ProxyRuntime* p = find(rt, name);
  if (slash == std::string::npos) {
    if (!p) return error(404, "proxy not found");
    if (m == "GET") return json(200, proxy_json(*p));
    if (m == "POST" || m == "PATCH") return update(req, rt, *p);
    if (m == "DELETE") {
      stop(rt, *p);
      p->removed = true;
      return {204, "", "application/json"};
    }
    return not_allowed();
  }
  const std::string sub = rest.substr(slash + 1);
  if (sub != "toxics" && sub.rfind("toxics/", 0) != 0) return error(404, "no such endpoint: " + m + " " + path);
  if (!p) return error(404, "proxy not found");
  if (sub == "toxics") {
    if (m == "GET") return json(200, toxics_json(*p));
    if (m == "POST") return create_toxic(req, rt, *p);
    return not_allowed();
  }
  ToxicRuntime* found = find_toxic(*p, sub.substr(7));
  if (m != "GET" && m != "POST" && m != "PATCH" && m != "DELETE") return not_allowed();
  if (!found) return error(404, "toxic not found");
  if (m == "GET") return json(200, toxic_json(*found));
  if (m == "DELETE") {
    remove_toxic(rt, *p, *found);
    spdlog::info("proxy '{}': toxic '{}' removed (control API)", p->spec->name, found->spec->name);
    return {204, "", "application/json"};
  }
  return update_toxic(req, rt, *p, *found);
}

}  // namespace faultline::proxy::admin
