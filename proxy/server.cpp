// The process around the workers: listening sockets are bound here, before any thread starts, so a
// bad address fails fast and `--threads N` workers can share one port with SO_REUSEPORT.
#include "proxy/server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "proxy/ca.h"
#include "proxy/runtime.h"
#include "proxy/tls.h"
#include "proxy/worker.h"

namespace faultline::proxy {

namespace {

std::string sockaddr_text(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
  port = ntohs(a->sin_port);
  return std::string(host) + ":" + std::to_string(port);
}

// Binds `count` listening sockets to the proxy's listen address (the same port for all).
bool bind_listeners(ProxyRuntime& p, int count, std::vector<int>* fds, std::string* why) {
  std::string err;
  auto hp = faults::parse_host_port(p.spec->listen, &err);
  if (!hp) {
    *why = "listen '" + p.spec->listen + "': " + err;
    return false;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(hp->host.c_str(), std::to_string(hp->port).c_str(), &hints, &res); rc != 0) {
    *why = "listen '" + p.spec->listen + "': " + gai_strerror(rc);
    return false;
  }
  sockaddr_storage addr{};
  std::memcpy(&addr, res->ai_addr, res->ai_addrlen);
  socklen_t addr_len = static_cast<socklen_t>(res->ai_addrlen);
  freeaddrinfo(res);
  for (int i = 0; i < count; ++i) {
    int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    bool ok = fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0;
    // Only with several workers: otherwise a second faultline could silently share our port.
    if (ok && count > 1) ok = ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0;
    if (ok) ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) == 0;
    if (ok) ok = ::listen(fd, 511) == 0;
    if (!ok) {
      *why = "listen " + p.spec->listen + ": " + std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return false;
    }
    if (i == 0) {  // learn the real port (port 0 = ephemeral) so every worker binds the same one
      addr_len = sizeof addr;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &addr_len);
      p.bound = sockaddr_text(addr);
    }
    fds->push_back(fd);
  }
  return true;
}

void report(Runtime& rt) {
  for (const auto& p : rt.proxies) {
    if (!p->rules) continue;
    for (size_t i = 0; i < p->spec->rules.size(); ++i) {
      const auto stats = p->rules->stats(i);
      spdlog::info("rule '{}' (proxy '{}'): matched {}, fired {}", p->spec->rules[i].name, p->spec->name,
                   stats.matched, stats.fired);
    }
  }
  for (const auto& ex : rt.scenario.expects) {
    uint64_t fired = 0;
    for (const auto& p : rt.proxies) {
      if (ex.target == faults::ExpectSpec::Target::toxic) {
        for (const auto& t : p->toxics)
          if (t->spec->name == ex.name) fired += t->fired.load();
      } else if (p->rules) {
        fired += p->rules->stats(ex.name).fired;
      }
    }
    bool met = ex.kind == faults::ExpectSpec::Kind::exactly    ? fired == ex.count
               : ex.kind == faults::ExpectSpec::Kind::at_least ? fired >= ex.count
                                                               : fired <= ex.count;
    const char* op = ex.kind == faults::ExpectSpec::Kind::exactly    ? "fired"
                     : ex.kind == faults::ExpectSpec::Kind::at_least ? "fired_at_least"
                                                                     : "fired_at_most";
    if (met)
      spdlog::info("expectation met: '{}' {} = {} (fired {}) at {}", ex.name, op, ex.count, fired, ex.where);
    else
      spdlog::warn("expectation NOT met: '{}' {} = {} but fired {} at {}", ex.name, op, ex.count, fired, ex.where);
  }
  if (rt.replay)
    for (const auto& pos : rt.replay->unmet()) spdlog::warn("replay: recorded {} never came", pos);
}

// Does any rule of the proxy read request bodies (json matchers, or Lua functions that may)?
bool reads_bodies(const faults::ProxySpec& spec) {
  if (spec.mock) return true;  // the mock answers "stream": true with a stream
  for (const auto& rule : spec.rules) {
    if (rule.action_function_ref >= 0 || rule.key.kind == faults::KeySpec::Kind::function) return true;
    for (const auto& c : rule.match)
      if (c.field.rfind("json:", 0) == 0) return true;
  }
  return false;
}

// The Host header the upstream expects: its name, with the port unless it is the scheme's default.
std::string host_header(const faults::HostPort& hp, bool tls) {
  std::string host = hp.host.find(':') != std::string::npos ? "[" + hp.host + "]" : hp.host;
  if (hp.port != (tls ? 443 : 80)) host += ":" + std::to_string(hp.port);
  return host;
}

// TLS contexts of one proxy: to an https upstream, and terminating on the listener.
bool setup_tls(ProxyRuntime& p, std::string* why) {
  const faults::ProxySpec& spec = *p.spec;
  if (spec.upstream_tls) {
    tls::ClientOptions opts;
    opts.verify = spec.tls_verify;
    if (const char* extra = std::getenv("FAULTLINE_UPSTREAM_CA")) opts.ca_file = extra;
    p.upstream_tls = tls::make_client_ctx(opts, why);
    if (!p.upstream_tls) return false;
  }
  switch (spec.tls.mode) {
    case faults::ListenTls::Mode::off:
      break;
    case faults::ListenTls::Mode::files:
      p.listen_tls = tls::make_server_ctx(spec.tls.cert, spec.tls.key, why);
      if (!p.listen_tls) return false;
      break;
    case faults::ListenTls::Mode::auto_cert: {
      const char* env = std::getenv("FAULTLINE_CA_DIR");
      const std::string dir = env && *env ? env : "certs";
      if (!ca::exists(dir)) {
        if (!ca::init(dir, false, why)) return false;
        spdlog::info("created a local CA in {}/ for tls = \"auto\"; trust {} in your clients", dir,
                     ca::cert_path(dir));
      }
      std::string err;
      const auto listen = faults::parse_host_port(spec.listen, &err);
      std::string cert, key;
      if (!ca::mint(dir, listen->host, &cert, &key, why)) return false;
      p.listen_tls = tls::make_server_ctx_from_pem(cert, key, why);
      if (!p.listen_tls) return false;
      break;
    }
  }
  return true;
}

}  // namespace

int run_server(faults::Scenario scenario, const ServerOptions& options) {
  ::signal(SIGPIPE, SIG_IGN);  // a peer that vanished is an error code, not a signal
  Runtime rt;
  rt.scenario = std::move(scenario);
  rt.hooks = options.hooks;
  if (!options.journal_path.empty()) {
    std::string why;
    if (!rt.journal.open(options.journal_path, &why)) {
      spdlog::error("{}", why);
      return 2;
    }
  }
  if (!options.replay_path.empty()) {
    std::string why;
    auto set = faults::ReplaySet::load(options.replay_path, &why);
    if (!set) {
      spdlog::error("replay: {}", why);
      return 2;
    }
    spdlog::info("replaying {} recorded fault(s) from {}", set->size(), options.replay_path);
    rt.replay.emplace(std::move(*set));
  }

  const int threads = options.threads;
  std::vector<std::vector<int>> fds(static_cast<size_t>(threads));
  for (const auto& spec : rt.scenario.proxies) {
    auto p = std::make_unique<ProxyRuntime>();
    p->spec = &spec;
    std::string err;
    if (!spec.mock) {
      p->upstream = *faults::parse_host_port(spec.upstream, &err);  // validated by the loader
      p->upstream_host_header = host_header(p->upstream, spec.upstream_tls);
    }
    p->needs_body = reads_bodies(spec);
    if (!spec.rules.empty()) {
      faults::RuleEngineOptions ro;
      ro.seed = rt.scenario.seed;
      ro.proxy = spec.name;
      ro.journal = &rt.journal;
      ro.replay = rt.replay ? &*rt.replay : nullptr;
      ro.hooks = rt.hooks.get();
      ro.log_warning = [](const std::string& text) { spdlog::warn("{}", text); };
      p->rules = std::make_unique<faults::RuleEngine>(spec.rules, std::move(ro));
    }
    if (std::string why; !setup_tls(*p, &why)) {
      spdlog::error("[{}] TLS: {}", spec.name, why);
      for (auto& list : fds)
        for (int fd : list) ::close(fd);
      return 1;
    }
    for (const auto& t : spec.toxics) {
      auto tr = std::make_unique<ToxicRuntime>();
      tr->spec = &t;
      p->toxics.push_back(std::move(tr));
    }
    std::vector<int> mine;
    std::string why;
    if (!bind_listeners(*p, threads, &mine, &why)) {
      spdlog::error("[{}] {}", spec.name, why);
      for (auto& list : fds)
        for (int fd : list) ::close(fd);
      return 1;
    }
    for (int i = 0; i < threads; ++i) fds[static_cast<size_t>(i)].push_back(mine[static_cast<size_t>(i)]);
    const bool url = spec.protocol == faults::Protocol::http && spec.upstream_tls;
    spdlog::info("proxy '{}' listening on {}{}, upstream {}{}{} ({}, {} toxic(s), {} rule(s))", spec.name, p->bound,
                 p->listen_tls ? " (TLS)" : "", url ? "https://" : "", spec.upstream,
                 spec.upstream_tls && !url ? " (TLS)" : "",
                 faults::to_string(spec.protocol), spec.toxics.size(), spec.rules.size());
    rt.proxies.push_back(std::move(p));
  }

  rt.start_ns = uv_hrtime();
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; ++i)
    workers.push_back(std::make_unique<Worker>(rt, i, std::move(fds[static_cast<size_t>(i)])));

  // Worker 0 runs on this thread and also takes the signals and flushes the journal.
  uv_signal_t sigint, sigterm;
  uv_timer_t flush_timer;
  // The first signal starts a graceful stop; a second one closes every connection at once. Either
  // way the journal is flushed and the report printed.
  int signals_seen = 0;
  auto stop_all = [&workers, &signals_seen]() {
    const bool force = ++signals_seen > 1;
    for (auto& w : workers) w->request_stop(force);
    return force;
  };
  workers[0]->on_loop_start([&](uv_loop_t* loop) {
    for (uv_signal_t* sig : {&sigint, &sigterm}) {
      uv_signal_init(loop, sig);
      sig->data = &stop_all;
    }
    auto on_signal = [](uv_signal_t* sig, int signum) {
      const bool forced = (*static_cast<decltype(stop_all)*>(sig->data))();
      spdlog::info(
          "{} received, {}", signum == SIGINT ? "SIGINT" : "SIGTERM",
          forced ? "closing every connection now" : "shutting down (signal again to close connections at once)");
    };
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_timer_init(loop, &flush_timer);
    flush_timer.data = &rt;
    uv_timer_start(
        &flush_timer, [](uv_timer_t* t) { static_cast<Runtime*>(t->data)->journal.flush(); }, 200, 200);
    spdlog::info("faultline ready: seed {}, {} proxy(ies), {} worker thread(s)", rt.scenario.seed, rt.proxies.size(),
                 workers.size());
  });
  workers[0]->on_loop_stop([&]() {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&flush_timer), nullptr);
    // Other workers may still be closing: a late signal must not kill the process before the
    // journal is flushed.
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGTERM, SIG_IGN);
  });

  std::vector<std::thread> pool;
  for (size_t i = 1; i < workers.size(); ++i) pool.emplace_back([w = workers[i].get()] { w->run(); });
  bool clean = workers[0]->run();
  for (auto& t : pool) t.join();
  rt.journal.flush();
  report(rt);
  spdlog::info("faultline stopped");
  return clean ? 0 : 1;
}

}  // namespace faultline::proxy
