// The faultline command line (SPEC §1).
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "faults/address.h"
#include "lua/scenario_loader.h"
#include "proxy/ca.h"
#include "proxy/log.h"
#include "proxy/server.h"

namespace {

using faultline::faults::Scenario;

constexpr int kExitUsage = 2;

struct Options {
  std::string scenario;
  std::string seed;
  std::string admin = "127.0.0.1:8474";
  std::string admin_token;
  std::string journal;
  std::string replay;
  std::string log_level = "info";
  std::string log_format = "text";
  std::string report_json;
  int threads = 1;
  size_t journal_lines = 10000;
  std::vector<std::string> command;  // run: CMD [ARGS...]
};

// "--seed N" or "--seed random"; nullopt when not given.
bool parse_seed(const std::string& text, std::optional<uint64_t>* out, std::string* why) {
  if (text.empty()) return true;
  if (text == "random") {
    std::random_device rd;  // choosing a seed is not deciding a fault: the seed is logged and reported
    *out = (static_cast<uint64_t>(rd()) << 32) | rd();
    return true;
  }
  try {
    size_t pos = 0;
    if (text[0] == '-') throw std::invalid_argument("negative");
    uint64_t v = std::stoull(text, &pos, 10);
    if (pos != text.size()) throw std::invalid_argument("trailing");
    *out = v;
    return true;
  } catch (const std::exception&) {
    *why = "--seed: expected a non-negative integer or 'random', got '" + text + "'";
    return false;
  }
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

void print_check(const Scenario& sc) {
  std::printf("scenario %s: seed %llu%s\n", sc.path.c_str(), static_cast<unsigned long long>(sc.seed),
              sc.seed_set ? "" : " (default)");
  for (const auto& p : sc.proxies) {
    std::string extra;
    if (p.tls.mode == faultline::faults::ListenTls::Mode::auto_cert) extra += " tls auto";
    if (p.tls.mode == faultline::faults::ListenTls::Mode::files) extra += " tls " + p.tls.cert;
    if (p.upstream_tls && !p.tls_verify) extra += " tls_verify=false";
    std::printf("proxy '%s' %s listen %s -> upstream %s%s%s  (%s)\n", p.name.c_str(),
                faultline::faults::to_string(p.protocol), p.listen.c_str(), p.upstream_tls ? "https://" : "",
                p.upstream.c_str(), extra.c_str(), p.where.c_str());
    for (const auto& t : p.toxics) {
      std::string attrs;
      for (const auto& [k, v] : t.attributes) attrs += (attrs.empty() ? "" : ", ") + k + "=" + std::to_string(v);
      std::printf("  toxic '%s': %s %s toxicity %g {%s}  (%s)\n", t.name.c_str(), t.type.c_str(),
                  faultline::faults::to_string(t.stream), t.toxicity, attrs.c_str(), t.where.c_str());
    }
    for (const auto& r : p.rules) {
      std::string conds;
      for (const auto& c : r.match) conds += (conds.empty() ? "" : ", ") + c.field;
      std::printf("  rule '%s': match {%s} -> %s  (%s)\n", r.name.c_str(), conds.c_str(),
                  r.action ? r.action->name() : "function", r.where.c_str());
    }
  }
  for (const auto& e : sc.expects) {
    const char* op = e.kind == faultline::faults::ExpectSpec::Kind::exactly    ? "fired"
                     : e.kind == faultline::faults::ExpectSpec::Kind::at_least ? "fired_at_least"
                                                                               : "fired_at_most";
    std::printf("expect '%s' %s = %llu  (%s)\n", e.name.c_str(), op, static_cast<unsigned long long>(e.count),
                e.where.c_str());
  }
  std::printf("ok\n");
}

struct CaOptions {
  std::string dir = "certs";  // relative to the working directory, where tls = "auto" looks by default
  bool force = false;
};

// `faultline ca init`: 0 created, 1 not (the reason on stderr).
int ca_init_main(const CaOptions& o) {
  std::string why;
  if (!faultline::proxy::ca::init(o.dir, o.force, &why)) {
    std::fprintf(stderr, "faultline ca init: %s\n", why.c_str());
    return 1;
  }
  std::string cert = faultline::proxy::ca::cert_path(o.dir), key = faultline::proxy::ca::key_path(o.dir);
  std::printf("created %s (CA certificate: give it to clients)\n", cert.c_str());
  std::printf("created %s (CA private key, mode 0600: keep it secret, never commit it)\n", key.c_str());
  std::printf("trust it: curl --cacert %s; Node: NODE_EXTRA_CA_CERTS=%s; Python: SSL_CERT_FILE=%s\n", cert.c_str(),
              cert.c_str(), cert.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"faultline — deterministic fault-injection proxy"};
  app.set_version_flag("--version", std::string("faultline ") + FAULTLINE_VERSION);
  app.require_subcommand(0, 1);
  Options o;
  auto add_run_options = [&o](CLI::App* a) {
    a->add_option("--seed", o.seed, "seed of every random decision (integer, or 'random')");
    a->add_option("--admin", o.admin, "control API address HOST:PORT, or 'off'");
    a->add_option("--admin-token", o.admin_token, "require 'Authorization: Bearer T' on the control API");
    a->add_option("--journal", o.journal, "append every fired fault to FILE as JSON lines");
    a->add_option("--replay", o.replay, "fire faults exactly where the journal FILE recorded them");
    a->add_option("--log-level", o.log_level, "trace, debug, info, warn, error");
    a->add_option("--log-format", o.log_format, "text or json");
    a->add_option("--threads", o.threads, "event-loop worker threads")->check(CLI::Range(1, 64));
    a->add_option("--report-json", o.report_json, "write the run report as JSON to FILE at exit");
    a->add_option("--journal-lines", o.journal_lines, "journal lines kept in memory for the control API")
        ->check(CLI::Range(size_t{1}, size_t{10000000}));
  };
  app.add_option("scenario", o.scenario, "scenario file (Lua) to run until SIGINT/SIGTERM");
  add_run_options(&app);
  auto* check = app.add_subcommand("check", "load and validate a scenario; print what would run");
  check->add_option("scenario", o.scenario, "scenario file")->required();
  check->add_option("--seed", o.seed, "seed to validate with");
  auto* run = app.add_subcommand("run", "start the proxies, run CMD with their addresses in its environment, "
                                       "stop, print the report; exit with CMD's code (3: expectations not met)");
  run->add_option("scenario", o.scenario, "scenario file")->required();
  run->add_option("command", o.command, "-- CMD [ARGS...]: the command to run")->required();
  add_run_options(run);
  auto* ca = app.add_subcommand("ca", "local certificate authority for TLS listeners");
  ca->require_subcommand(1);
  CaOptions ca_opts;
  auto* ca_init = ca->add_subcommand("init", "create DIR/ca.pem and DIR/ca.key");
  ca_init->add_option("--dir", ca_opts.dir, "directory of the CA files")->capture_default_str();
  ca_init->add_flag("--force", ca_opts.force, "replace an existing CA");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "faultline: %s\nRun 'faultline --help' for usage.\n", e.what());
    return kExitUsage;
  }
  if (ca_init->parsed()) return ca_init_main(ca_opts);
  const bool admin_given = app.count("--admin") > 0 || run->count("--admin") > 0;
  if (o.scenario.empty()) {
    std::fprintf(stderr, "faultline: no scenario file given\nRun 'faultline --help' for usage.\n");
    return kExitUsage;
  }
  std::string why;
  if (!faultline::proxy::setup_logging(o.log_level, o.log_format, &why)) {
    std::fprintf(stderr, "faultline: %s\n", why.c_str());
    return kExitUsage;
  }
  std::optional<uint64_t> seed;
  if (!parse_seed(o.seed, &seed, &why)) {
    std::fprintf(stderr, "faultline: %s\n", why.c_str());
    return kExitUsage;
  }
  if (o.admin != "off") {
    auto hp = faultline::faults::parse_host_port(o.admin, &why);
    if (!hp) {
      std::fprintf(stderr, "faultline: --admin '%s': %s\n", o.admin.c_str(), why.c_str());
      return kExitUsage;
    }
    if (!is_loopback(hp->host) && o.admin_token.empty()) {
      std::fprintf(stderr, "faultline: --admin %s is not loopback: set --admin-token to protect it\n", o.admin.c_str());
      return kExitUsage;
    }
  }

  auto loaded = faultline::lua::load_scenario_file(o.scenario, seed);
  if (!loaded.scenario) {
    std::fprintf(stderr, "%s\n", loaded.error.c_str());
    return kExitUsage;
  }
  if (check->parsed()) {
    print_check(*loaded.scenario);
    return 0;
  }
  faultline::proxy::ServerOptions so;
  so.threads = o.threads;
  so.journal_path = o.journal;
  so.replay_path = o.replay;
  so.hooks = loaded.hooks;
  so.command = o.command;
  so.report_json = o.report_json;
  so.admin = o.admin;
  so.admin_explicit = admin_given;
  so.admin_token = o.admin_token;
  so.journal_lines = o.journal_lines;
  // A reload (PUT /faultline/v1/scenario, SIGHUP) loads like the start did, with the same --seed.
  so.load_scenario = [path = o.scenario, seed](const std::string* source, faultline::faults::Scenario* out,
                                               std::shared_ptr<faultline::faults::ScriptHooks>* hooks,
                                               std::string* error) {
    auto next = source ? faultline::lua::load_scenario_source(*source, path, seed)
                       : faultline::lua::load_scenario_file(path, seed);
    if (!next.scenario) {
      *error = next.error;
      return false;
    }
    *out = std::move(*next.scenario);
    *hooks = std::move(next.hooks);
    return true;
  };
  spdlog::info("faultline {} starting scenario {} with seed {}", FAULTLINE_VERSION, o.scenario, loaded.scenario->seed);
  return faultline::proxy::run_server(std::move(*loaded.scenario), so);
}
