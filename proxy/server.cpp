// The process around the workers: listening sockets are bound here, before any thread starts, so a
// bad address fails fast and `--threads N` workers can share one port with SO_REUSEPORT.
#include "proxy/server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include <spdlog/spdlog.h>

#include "proxy/admin/admin_server.h"
#include "proxy/ca.h"
#include "proxy/conn.h"
#include "proxy/reload.h"
#include "proxy/report.h"
#include "proxy/runtime.h"
#include "proxy/tls.h"
#include "proxy/toxic_decision.h"
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

// The control API's listening socket; -1 and *why when it cannot be bound.
int bind_admin(const std::string& address, std::string* bound, std::string* why, int* err) {
  std::string e;
  auto hp = faults::parse_host_port(address, &e);
  if (!hp) {
    *why = e;
    return -1;
  }
  sockaddr_storage addr{};
  if (!literal_address(*hp, &addr)) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = getaddrinfo(hp->host.c_str(), std::to_string(hp->port).c_str(), &hints, &res); rc != 0) {
      *why = gai_strerror(rc);
      return -1;
    }
    std::memcpy(&addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
  }
  const socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 128) != 0) {
    *err = errno;
    *why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return -1;
  }
  socklen_t got = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &got);
  *bound = sockaddr_text(addr);
  return fd;
}

// The report at shutdown (SPEC §4.2): to the log, and as JSON when asked.
RunReport finish_report(const Runtime& rt, const std::string& json_path, bool to_log) {
  RunReport report = make_report(rt);
  if (to_log)
    for (const auto& line : report.lines()) {
      if (line.bad)
        spdlog::warn("{}", line.text);
      else
        spdlog::info("{}", line.text);
    }
  if (!json_path.empty()) {
    std::ofstream out(json_path, std::ios::binary | std::ios::trunc);
    out << report.to_json().dump() << "\n";
    if (!out) spdlog::error("--report-json {}: cannot write the report: {}", json_path, std::strerror(errno));
  }
  return report;
}

// FAULTLINE_<NAME>_ADDR and _URL for `run` (SPEC §1): the name upper-cased, '-' as '_'.
std::vector<std::string> run_environment(const Runtime& rt) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  for (const auto& p : rt.proxies) {
    std::string name;
    for (char c : p->spec->name) name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const char* scheme = "tcp";
    switch (p->spec->protocol) {
      case faults::Protocol::http: scheme = p->listen_tls ? "https" : "http"; break;
      case faults::Protocol::redis: scheme = "redis"; break;
      case faults::Protocol::postgres: scheme = "postgres"; break;
      case faults::Protocol::tcp: break;
    }
    env.push_back("FAULTLINE_" + name + "_ADDR=" + p->bound);
    env.push_back("FAULTLINE_" + name + "_URL=" + std::string(scheme) + "://" + p->bound);
  }
  return env;
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

// Binds `count` listening sockets to the proxy's listen address (the same port for all).
bool bind_listeners(ProxyRuntime& p, int count, std::vector<int>* fds, std::string* why) {
  std::string err;
  // A proxy listening again after being disabled takes the port it had, even when it asked for port 0.
  auto hp = faults::parse_host_port(p.rebind.empty() ? p.spec->listen : p.rebind, &err);
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


std::unique_ptr<ProxyRuntime> make_scenario_proxy(Runtime& rt, const faults::ProxySpec& spec, uint64_t seed,
                                                  std::shared_ptr<faults::ScriptHooks> hooks, std::string* why) {
  auto p = std::make_unique<ProxyRuntime>();
  p->spec = &spec;
  p->from_scenario = true;
  p->seed = seed;
  p->hooks = std::move(hooks);
  p->start_ns = uv_hrtime();
  std::string err;
  if (!spec.mock) {
    p->upstream = *faults::parse_host_port(spec.upstream, &err);  // validated by the loader
    p->upstream_host_header = host_header(p->upstream, spec.upstream_tls);
  }
  p->needs_body = reads_bodies(spec);
  if (!spec.rules.empty()) {
    faults::RuleEngineOptions ro;
    ro.seed = seed;
    ro.proxy = spec.name;
    ro.journal = &rt.journal;
    ro.replay = rt.replay ? &*rt.replay : nullptr;
    ro.hooks = p->hooks.get();
    ro.log_warning = [](const std::string& text) { spdlog::warn("{}", text); };
    p->rules = std::make_unique<faults::RuleEngine>(spec.rules, std::move(ro));
  }
  if (std::string tls_why; !setup_tls(*p, &tls_why)) {
    *why = "[" + spec.name + "] TLS: " + tls_why;
    return nullptr;
  }
  for (const auto& t : spec.toxics) {
    auto tr = std::make_unique<ToxicRuntime>();
    tr->spec = &t;
    p->toxics.push_back(std::move(tr));
  }
  return p;
}

int run_server(faults::Scenario scenario, const ServerOptions& options) {
  ::signal(SIGPIPE, SIG_IGN);  // a peer that vanished is an error code, not a signal
  Runtime rt;
  rt.scenario = std::move(scenario);
  rt.hooks = options.hooks;
  rt.load_scenario = options.load_scenario;
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
    std::string why;
    auto p = make_scenario_proxy(rt, spec, rt.scenario.seed, rt.hooks, &why);
    if (!p) {
      spdlog::error("{}", why);
      for (auto& list : fds)
        for (int fd : list) ::close(fd);
      return 1;
    }
    std::vector<int> mine;
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

  // The control API (SPEC §5): bound now, so a bad address fails before anything runs. The default
  // address taken by another faultline is only a warning: that one serves its own API.
  int admin_fd = -1;
  std::string admin_bound;
  if (options.admin != "off") {
    std::string why;
    int err = 0;
    admin_fd = bind_admin(options.admin, &admin_bound, &why, &err);
    if (admin_fd < 0 && (options.admin_explicit || err != EADDRINUSE)) {
      spdlog::error("control API --admin {}: {}", options.admin, why);
      for (auto& list : fds)
        for (int fd : list) ::close(fd);
      return 1;
    }
    if (admin_fd < 0)
      spdlog::warn("control API not served: {} is in use (pass --admin HOST:PORT, or --admin off)", options.admin);
    else
      spdlog::info("control API on http://{} (/faultline/v1{})", admin_bound,
                   options.admin_token.empty() ? "" : ", bearer token required");
  }
  rt.journal.set_capacity(options.journal_lines);
  admin::Options admin_options;
  admin_options.token = options.admin_token;

  rt.start_ns = uv_hrtime();
  for (auto& p : rt.proxies) p->start_ns = rt.start_ns;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; ++i)
    workers.push_back(std::make_unique<Worker>(rt, i, std::move(fds[static_cast<size_t>(i)])));
  for (auto& w : workers) rt.workers.push_back(w.get());

  // Worker 0 runs on this thread and also takes the signals, flushes the journal and (run) watches CMD.
  uv_signal_t sigint, sigterm, sighup;
  uv_timer_t flush_timer;
  // The first signal starts a graceful stop; a second one closes every connection at once. Either
  // way the journal is flushed and the report printed. With a command running (`run`), a signal goes to
  // it instead, and the proxies stop once it has exited.
  struct Child {
    uv_process_t process;
    bool running = false;
    int exit_code = 0;
    std::string spawn_error;
  } child;
  int signals_seen = 0;
  std::function<bool()> stop_all = [&workers, &signals_seen]() {
    const bool force = ++signals_seen > 1;
    for (auto& w : workers) w->request_stop(force);
    return force;
  };
  struct SignalContext {
    std::function<bool()>* stop_all;
    Child* child;
  } signal_ctx{&stop_all, &child};
  const bool run_mode = !options.command.empty();
  std::vector<std::string> env_strings = run_mode ? run_environment(rt) : std::vector<std::string>{};
  if (run_mode && admin_fd >= 0) env_strings.push_back("FAULTLINE_ADMIN_URL=http://" + admin_bound);
  workers[0]->on_loop_start([&](uv_loop_t* loop) {
    for (uv_signal_t* sig : {&sigint, &sigterm}) {
      uv_signal_init(loop, sig);
      sig->data = &signal_ctx;
    }
    auto on_signal = [](uv_signal_t* sig, int signum) {
      auto* ctx = static_cast<SignalContext*>(sig->data);
      const char* name = signum == SIGINT ? "SIGINT" : "SIGTERM";
      if (ctx->child->running) {
        spdlog::info("{} received, passing it to the command", name);
        uv_process_kill(&ctx->child->process, signum);
        return;
      }
      const bool forced = (*ctx->stop_all)();
      spdlog::info("{} received, {}", name,
                   forced ? "closing every connection now" : "shutting down (signal again to close connections at once)");
    };
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    // SIGHUP reloads the scenario file as PUT /faultline/v1/scenario does; a broken one is only logged.
    uv_signal_init(loop, &sighup);
    sighup.data = &rt;
    uv_signal_start(
        &sighup,
        [](uv_signal_t* sig, int) {
          auto* runtime = static_cast<Runtime*>(sig->data);
          spdlog::info("SIGHUP received, reloading {}", runtime->scenario.path);
          const ReloadResult r = reload_scenario(*runtime, nullptr);
          if (!r.ok) spdlog::error("reload refused, the running scenario stays: {}", r.error);
        },
        SIGHUP);
    uv_timer_init(loop, &flush_timer);
    flush_timer.data = &rt;
    uv_timer_start(
        &flush_timer,
        [](uv_timer_t* t) {
          auto* runtime = static_cast<Runtime*>(t->data);
          expire_ttls(*runtime);
          runtime->journal.flush();
        },
        100, 100);
    if (admin_fd >= 0) {
      Worker& w0 = *workers[0];
      std::string why;
      if (!w0.add_listener(admin_fd, [&w0, &admin_options](uv_stream_t* s) { admin::accept(w0, s, admin_options); }, &why))
        spdlog::error("control API: {}", why);
      admin_fd = -1;
    }
    spdlog::info("faultline ready: seed {}, {} proxy(ies), {} worker thread(s)", rt.scenario.seed, rt.proxies.size(),
                 workers.size());
    if (!run_mode) return;
    // CMD with the proxies' addresses in its environment; stdin, stdout and stderr are ours.
    std::vector<char*> args, env;
    for (const auto& a : options.command) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (auto& e : env_strings) env.push_back(e.data());
    env.push_back(nullptr);
    uv_stdio_container_t stdio[3];
    for (int fd = 0; fd < 3; ++fd) {
      stdio[fd].flags = UV_INHERIT_FD;
      stdio[fd].data.fd = fd;
    }
    uv_process_options_t po{};
    po.file = args[0];
    po.args = args.data();
    po.env = env.data();
    po.stdio = stdio;
    po.stdio_count = 3;
    po.exit_cb = [](uv_process_t* p, int64_t status, int term_signal) {
      auto* c = static_cast<SignalContext*>(p->data);
      c->child->running = false;
      c->child->exit_code = term_signal ? 128 + term_signal : static_cast<int>(status);
      spdlog::info("command exited with {}{}", c->child->exit_code,
                   term_signal ? " (signal " + std::to_string(term_signal) + ")" : std::string());
      uv_close(reinterpret_cast<uv_handle_t*>(p), nullptr);
      (*c->stop_all)();
    };
    child.process.data = &signal_ctx;
    if (int rc = uv_spawn(loop, &child.process, &po); rc != 0) {
      child.spawn_error = std::string("cannot run '") + options.command[0] + "': " + uv_strerror(rc);
      child.exit_code = rc == UV_ENOENT || rc == UV_EACCES ? (rc == UV_ENOENT ? 127 : 126) : 1;
      spdlog::error("{}", child.spawn_error);
      uv_close(reinterpret_cast<uv_handle_t*>(&child.process), nullptr);
      stop_all();
      return;
    }
    child.running = true;
    spdlog::info("running {} (pid {})", options.command[0], child.process.pid);
  });
  workers[0]->on_loop_stop([&]() {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sighup), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&flush_timer), nullptr);
    // Other workers may still be closing: a late signal must not kill the process before the
    // journal is flushed.
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGTERM, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
  });

  std::vector<std::thread> pool;
  for (size_t i = 1; i < workers.size(); ++i) pool.emplace_back([w = workers[i].get()] { w->run(); });
  bool clean = workers[0]->run();
  for (auto& t : pool) t.join();
  rt.journal.flush();
  const RunReport report = finish_report(rt, options.report_json, !run_mode);
  spdlog::info("faultline stopped");
  if (!run_mode) return clean ? 0 : 1;
  // `run`: the report on stderr, after CMD's own output; CMD's exit code, or 3 when it succeeded but an
  // expectation or a replayed fault failed.
  std::fflush(stdout);
  std::fprintf(stderr, "\nfaultline run report\n");
  for (const auto& line : report.lines()) std::fprintf(stderr, "  %s%s\n", line.bad ? "FAIL " : "", line.text.c_str());
  if (child.exit_code == 0 && !report.ok()) {
    std::fprintf(stderr, "faultline run: the command succeeded, but the scenario's expectations did not: exit 3\n");
    return 3;
  }
  return child.exit_code;
}

}  // namespace faultline::proxy
