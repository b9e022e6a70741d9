// The scenario loader: what a valid scenario becomes, where each mistake is reported, what the sandbox refuses.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "lua/scenario_loader.h"

using faultline::faults::ExpectSpec;
using faultline::faults::Protocol;
using faultline::faults::Scenario;
using faultline::faults::Stream;
using faultline::lua::load_scenario_file;
using faultline::lua::load_scenario_source;
using faultline::lua::LoadResult;

namespace {

// Two lines every error case starts with, so the line under test is always line 3.
const std::string kPrelude =
    "seed(1)\n"
    "local p = proxy { name = 'p', listen = '127.0.0.1:7001', upstream = '127.0.0.1:7002' }\n";

Scenario load_ok(const std::string& source, std::optional<uint64_t> seed = std::nullopt) {
  LoadResult result = load_scenario_source(source, "s.lua", seed);
  INFO("error: " << result.error);
  REQUIRE(result.scenario.has_value());
  REQUIRE(result.error.empty());
  return *result.scenario;
}

std::string load_error(const std::string& source) {
  LoadResult result = load_scenario_source(source, "s.lua");
  REQUIRE_FALSE(result.scenario.has_value());
  return result.error;
}

// The error names `where` first and mentions every key word.
void require_error(const std::string& source, const std::string& where, std::initializer_list<std::string> words) {
  const std::string error = load_error(source);
  INFO("error: " << error);
  REQUIRE(error.rfind(where, 0) == 0);
  for (const auto& word : words) CHECK(error.find(word) != std::string::npos);
}

// Line 3 of a scenario that has a proxy `p`.
void require_line3_error(const std::string& line3, std::initializer_list<std::string> words) {
  require_error(kPrelude + line3 + "\n", "s.lua:3: ", words);
}

}  // namespace

TEST_CASE("a full scenario becomes every field of the Scenario") {
  const Scenario s = load_ok(R"(seed(42)

local pg = proxy {
  name = "pg",
  listen = "127.0.0.1:6543",
  upstream = "127.0.0.1:5432",
  protocol = "postgres",
}
local api = proxy { name = "open-ai_1", listen = "[::1]:0", upstream = "http://127.0.0.1:8000/", protocol = "http" }

pg:toxic { type = "latency", latency = 50, jitter = 10.0 }
pg:toxic { type = "latency", name = "slow-up", stream = "upstream", toxicity = 0.25,
           attributes = { latency = 7 } }
api:toxic { type = "slicer", stream = "upstream", average_size = 64, attributes = { delay = 3 } }
api:toxic { type = "timeout" }

expect { toxic = "slow-up", fired_at_least = 1 }
expect { toxic = "timeout_downstream", fired = 0 }
expect { toxic = "latency_downstream", fired_at_most = 3 }
)");
  CHECK(s.path == "s.lua");
  CHECK(s.seed == 42);
  CHECK(s.seed_set);
  REQUIRE(s.proxies.size() == 2);

  const auto& pg = s.proxies[0];
  CHECK(pg.name == "pg");
  CHECK(pg.listen == "127.0.0.1:6543");
  CHECK(pg.upstream == "127.0.0.1:5432");
  CHECK(pg.protocol == Protocol::postgres);
  CHECK(pg.where == "s.lua:3");
  REQUIRE(pg.toxics.size() == 2);

  const auto& lat = pg.toxics[0];
  CHECK(lat.name == "latency_downstream");
  CHECK(lat.type == "latency");
  CHECK(lat.stream == Stream::downstream);
  CHECK(lat.toxicity == 1.0);
  CHECK(lat.attributes == std::map<std::string, int64_t>{{"latency", 50}, {"jitter", 10}});
  CHECK(lat.where == "s.lua:11");

  const auto& up = pg.toxics[1];
  CHECK(up.name == "slow-up");
  CHECK(up.stream == Stream::upstream);
  CHECK(up.toxicity == 0.25);
  CHECK(up.attributes == std::map<std::string, int64_t>{{"latency", 7}, {"jitter", 0}});
  CHECK(up.where == "s.lua:12");

  const auto& api = s.proxies[1];
  CHECK(api.name == "open-ai_1");
  CHECK(api.listen == "[::1]:0");
  CHECK(api.upstream == "127.0.0.1:8000");
  CHECK(api.protocol == Protocol::http);
  CHECK(api.where == "s.lua:9");
  REQUIRE(api.toxics.size() == 2);
  CHECK(api.toxics[0].name == "slicer_upstream");
  CHECK(api.toxics[0].attributes ==
        std::map<std::string, int64_t>{{"average_size", 64}, {"size_variation", 0}, {"delay", 3}});
  CHECK(api.toxics[1].name == "timeout_downstream");
  CHECK(api.toxics[1].attributes == std::map<std::string, int64_t>{{"timeout", 0}});

  REQUIRE(s.expects.size() == 3);
  CHECK(s.expects[0].name == "slow-up");
  CHECK(s.expects[0].kind == ExpectSpec::Kind::at_least);
  CHECK(s.expects[0].count == 1);
  CHECK(s.expects[0].where == "s.lua:17");
  CHECK(s.expects[1].kind == ExpectSpec::Kind::exactly);
  CHECK(s.expects[1].count == 0);
  CHECK(s.expects[2].kind == ExpectSpec::Kind::at_most);
  CHECK(s.expects[2].count == 3);
}

TEST_CASE("defaults: seed 1, protocol tcp, an http upstream without a port gets 80") {
  const Scenario s = load_ok(
      "proxy { name = 'a', listen = '127.0.0.1:0', upstream = 'localhost:1' }\n"
      "proxy { name = 'b', listen = '127.0.0.1:0', upstream = 'http://example.test', protocol = 'http' }\n");
  CHECK(s.seed == 1);
  CHECK_FALSE(s.seed_set);
  REQUIRE(s.proxies.size() == 2);
  CHECK(s.proxies[0].protocol == Protocol::tcp);
  CHECK(s.proxies[1].upstream == "example.test:80");
  CHECK(s.expects.empty());
}

TEST_CASE("a UTF-8 BOM and a #! line are skipped without shifting line numbers") {
  require_error("\xEF\xBB\xBF#!/usr/bin/env faultline\nseed(1)\nseed(-1)\n", "s.lua:3: ", {"seed"});
}

TEST_CASE("errors name the file and line of the mistake") {
  SECTION("syntax error") { require_line3_error("local x = = 1", {"unexpected symbol"}); }
  SECTION("a runtime error in the script is reported as Lua words it") {
    require_line3_error("undefined_function()", {"attempt to call a nil value", "undefined_function"});
  }
  SECTION("error() with a table value still gets a line") { require_line3_error("error({})", {"table"}); }
  SECTION("error() at level 0 still gets a line") { require_line3_error("error('plain', 0)", {"plain"}); }
  SECTION("unknown toxic type") {
    require_line3_error("p:toxic { type = 'latncy', latency = 1 }", {"unknown toxic type 'latncy'", "latency"});
  }
  SECTION("toxic without a type") { require_line3_error("p:toxic { latency = 1 }", {"missing field 'type'"}); }
  SECTION("missing required attribute") {
    require_line3_error("p:toxic { type = 'latency', jitter = 5 }", {"toxic 'latency': missing attribute 'latency'"});
  }
  SECTION("unknown attribute, listing the valid ones") {
    require_line3_error("p:toxic { type = 'latency', latency = 1, jiter = 5 }",
                        {"unknown attribute 'jiter'", "latency, jitter"});
  }
  SECTION("unknown attribute inside attributes = {}") {
    require_line3_error("p:toxic { type = 'bandwidth', attributes = { rat = 5 } }",
                        {"unknown attribute 'rat'", "rate"});
  }
  SECTION("attribute given twice") {
    require_line3_error("p:toxic { type = 'bandwidth', rate = 1, attributes = { rate = 5 } }", {"'rate'", "twice"});
  }
  SECTION("attribute not an integer") {
    require_line3_error("p:toxic { type = 'latency', latency = 1.5 }", {"attribute 'latency'", "integer", "1.5"});
  }
  SECTION("attribute a string") {
    require_line3_error("p:toxic { type = 'latency', latency = '100' }", {"attribute 'latency'", "integer"});
  }
  SECTION("attribute below its minimum") {
    require_line3_error("p:toxic { type = 'slicer', average_size = 0 }", {"'average_size'", ">= 1"});
  }
  SECTION("negative attribute") {
    require_line3_error("p:toxic { type = 'latency', latency = -5 }", {"'latency'", ">= 0", "-5"});
  }
  SECTION("bad stream") {
    require_line3_error("p:toxic { type = 'latency', latency = 1, stream = 'up' }", {"stream", "'up'", "downstream"});
  }
  SECTION("toxicity above 1") {
    require_line3_error("p:toxic { type = 'latency', latency = 1, toxicity = 1.5 }", {"toxicity", "1.5"});
  }
  SECTION("toxicity below 0") {
    require_line3_error("p:toxic { type = 'latency', latency = 1, toxicity = -0.1 }", {"toxicity", "-0.1"});
  }
  SECTION("toxicity not a number") {
    require_line3_error("p:toxic { type = 'latency', latency = 1, toxicity = 'all' }", {"toxicity", "number"});
  }
  SECTION("duplicate toxic name (the default one)") {
    require_error(kPrelude + "p:toxic { type = 'latency', latency = 1 }\np:toxic { type = 'latency', latency = 2 }\n",
                  "s.lua:4: ", {"duplicate toxic name", "latency_downstream", "s.lua:3"});
  }
  SECTION("the same toxic name on another stream or proxy is fine") {
    load_ok(kPrelude +
            "p:toxic { type = 'latency', latency = 1 }\n"
            "p:toxic { type = 'latency', latency = 1, stream = 'upstream' }\n");
  }
  SECTION("toxic called with a dot instead of a colon") {
    require_line3_error("p.toxic { type = 'latency', latency = 1 }", {"p:toxic"});
  }
  SECTION("bad listen address") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:99999', upstream = 'h:1' }",
                        {"proxy 'q'", "bad listen address", "99999"});
  }
  SECTION("listen without a port") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1', upstream = 'h:1' }",
                        {"bad listen address '127.0.0.1'", "port"});
  }
  SECTION("upstream without a port") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'db' }",
                        {"bad upstream address 'db'", "port"});
  }
  SECTION("missing listen") {
    require_line3_error("proxy { name = 'q', upstream = 'h:1' }", {"proxy 'q'", "missing field 'listen'"});
  }
  SECTION("missing name") {
    require_line3_error("proxy { listen = '127.0.0.1:0', upstream = 'h:1' }", {"missing field 'name'"});
  }
  SECTION("unknown proxy field") {
    require_line3_error("proxy { name = 'q', lisen = '127.0.0.1:0', upstream = 'h:1' }",
                        {"proxy: unknown field 'lisen'", "listen"});
  }
  SECTION("bad proxy name") {
    require_line3_error("proxy { name = 'my proxy', listen = '127.0.0.1:0', upstream = 'h:1' }", {"'my proxy'"});
  }
  SECTION("proxy field of the wrong type") {
    require_line3_error("proxy { name = 'q', listen = 8080, upstream = 'h:1' }", {"'listen'", "string", "8080"});
  }
  SECTION("proxy without a table") { require_line3_error("proxy 'q'", {"expected a table"}); }
  SECTION("duplicate proxy name") {
    require_line3_error("proxy { name = 'p', listen = '127.0.0.1:7003', upstream = 'h:1' }",
                        {"duplicate proxy name 'p'", "s.lua:2"});
  }
  SECTION("duplicate listen address") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:7001', upstream = 'h:1' }",
                        {"127.0.0.1:7001", "already used by proxy 'p'", "s.lua:2"});
  }
  SECTION("a wildcard listen address takes the port on every address") {
    require_line3_error("proxy { name = 'q', listen = '0.0.0.0:7001', upstream = 'h:1' }", {"already used"});
  }
  SECTION("bad protocol") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', protocol = 'htp' }",
                        {"unknown protocol 'htp'", "postgres"});
  }
  SECTION("a mock upstream needs protocol http") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'mock' }",
                        {"upstream 'mock' needs protocol = \"http\""});
  }
  SECTION("an https upstream needs protocol http") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'https://api.openai.com' }",
                        {"https://api.openai.com", "only a protocol = \"http\" proxy takes a URL"});
  }
  SECTION("tls_verify only with an https upstream") {
    require_line3_error(
        "proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'http://h:1', protocol = 'http', tls_verify = false }",
        {"tls_verify applies to a TLS upstream only (https://, or upstream_tls = true)"});
  }
  SECTION("upstream_tls only on postgres proxies") {
    require_line3_error(
        "proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', protocol = 'http', upstream_tls = true }",
        {"upstream_tls applies to postgres proxies; an http proxy takes an https:// upstream"});
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', protocol = 'redis', upstream_tls = true }",
                        {"upstream_tls applies to protocol = \"postgres\" proxies"});
  }
  SECTION("tls must be auto or a cert and key") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', protocol = 'http', tls = 'yes' }",
                        {"tls must be \"auto\" or { cert"});
    require_line3_error(
        "proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', protocol = 'http', tls = { cert = 'c.pem' } }",
        {"tls needs both cert and key"});
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', tls = 'auto' }",
                        {"tls (terminating TLS on the listener) needs protocol = \"http\""});
  }
  SECTION("upstream_timeout is a non-negative number of ms on http proxies") {
    require_line3_error(
        "proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', protocol = 'http', upstream_timeout = -1 }",
        {"upstream_timeout must be >= 0 ms"});
  }
  SECTION("a URL upstream needs protocol http") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'http://h:1' }",
                        {"http://h:1", "http"});
  }
  SECTION("tls is not supported yet") {
    require_line3_error("proxy { name = 'q', listen = '127.0.0.1:0', upstream = 'h:1', tls = 'auto' }", {"tls"});
  }
  SECTION("a rule needs an action") {
    require_line3_error("p:rule { name = 'r', nth = 1 }", {"rule 'r'", "missing field 'action'"});
  }
  SECTION("seed must be a non-negative integer") {
    require_line3_error("seed(-1)", {"seed", "non-negative integer", "-1"});
    require_line3_error("seed(1.5)", {"seed", "1.5"});
    require_line3_error("seed('7')", {"seed"});
  }
  SECTION("expect naming nothing") {
    require_line3_error("expect { rule = 'nope', fired = 1 }", {"no rule named 'nope'"});
    require_line3_error("expect { toxic = 'nope', fired = 1 }", {"no toxic named 'nope'"});
  }
  SECTION("expect naming a toxic declared later is fine") {
    load_ok(kPrelude + "expect { toxic = 'later', fired = 1 }\np:toxic { type = 'timeout', name = 'later' }\n");
  }
  SECTION("expect of a rule that is a toxic says so") {
    require_line3_error("p:toxic { type = 'timeout', name = 't' } expect { rule = 't', fired = 1 }",
                        {"no rule named 't'", "toxic = \"t\""});
  }
  SECTION("expect with two counts") {
    require_line3_error("expect { rule = 'r', fired = 1, fired_at_most = 2 }",
                        {"exactly one of", "fired, fired_at_most"});
  }
  SECTION("expect with no count") { require_line3_error("expect { rule = 'r' }", {"exactly one of"}); }
  SECTION("expect with a negative count") {
    require_line3_error("expect { rule = 'r', fired_at_least = -1 }", {"fired_at_least", "non-negative"});
  }
  SECTION("expect with both rule and toxic") {
    require_line3_error("expect { rule = 'r', toxic = 't', fired = 1 }", {"not both"});
  }
  SECTION("expect with an unknown field") {
    require_line3_error("expect { rule = 'r', fird = 1 }", {"unknown field 'fird'"});
  }
}

TEST_CASE("a multi-line declaration is reported at the line where the call starts") {
  require_error(kPrelude + "\np:toxic {\n  type = 'latency',\n  latency = 'x',\n}\n", "s.lua:4: ", {"latency"});
}

TEST_CASE("errors from a function defined elsewhere point at the line of the call") {
  require_error(kPrelude + "local function add(t)\n  p:toxic(t)\nend\nadd { type = 'nope' }\n",
                "s.lua:4: ", {"unknown toxic type 'nope'"});
}

TEST_CASE("a long path is reported whole, not as Lua's truncated short name") {
  const std::string path = "/tmp/" + std::string(80, 'd') + "/scenario.lua";
  for (const std::string& source :
       {std::string("\n\nnot_defined()\n"), std::string("\n\nlocal = 1\n"), std::string("\n\nproxy {}\n")}) {
    LoadResult result = load_scenario_source(source, path);
    INFO(result.error);
    REQUIRE(result.error.rfind(path + ":3: ", 0) == 0);
  }
}

TEST_CASE("the sandbox refuses what a scenario must not do") {
  SECTION("os.execute") { require_line3_error("os.execute('true')", {"execute"}); }
  SECTION("os.exit") { require_line3_error("os.exit(0)", {"exit"}); }
  SECTION("io.open") { require_line3_error("io.open('/etc/passwd')", {"'io'"}); }
  SECTION("require") { require_line3_error("require('os')", {"require is not available in scenarios"}); }
  SECTION("package") { require_line3_error("package.loadlib('x', 'y')", {"'package'"}); }
  SECTION("dofile") { require_line3_error("dofile('/etc/passwd')", {"dofile"}); }
  SECTION("loadfile") { require_line3_error("loadfile('/etc/passwd')", {"loadfile"}); }
  SECTION("debug") { require_line3_error("debug.sethook()", {"'debug'"}); }
  SECTION("load of a binary chunk") {
    require_line3_error("assert(load(string.dump(function() return 1 end), 'x', 'b'))", {"binary chunk"});
  }
  SECTION("a binary main chunk") {
    LoadResult result = load_scenario_source("\x1bLua binary", "s.lua");
    REQUIRE(result.error.rfind("s.lua:1: ", 0) == 0);
    CHECK(result.error.find("binary") != std::string::npos);
  }
  SECTION("what stays: text load, string, table, math, utf8, coroutine, os.time/clock/date/getenv") {
    load_ok(R"(
      assert(load("return 1 + 1")() == 2)
      assert(load("return x", "chunk", "t", { x = 5 })() == 5)
      assert(string.format("%d", 3) == "3" and table.concat({1, 2}, ",") == "1,2")
      assert(math.floor(2.5) == 2 and utf8.char(72) == "H")
      assert(coroutine.wrap(function() coroutine.yield(7) end)() == 7)
      assert(type(os.time()) == "number" and type(os.clock()) == "number" and type(os.date()) == "string")
      assert(os.getenv("FAULTLINE_SURELY_UNSET_VARIABLE") == nil)
      assert(pcall(error, "x") == false)
    )");
  }
}

TEST_CASE("an infinite loop ends with an error instead of hanging") {
  const auto start = std::chrono::steady_clock::now();
  require_line3_error("while true do end", {"scenario ran too long (infinite loop?)"});
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
}

TEST_CASE("a loop that keeps catching the stop with pcall still ends") {
  require_error(kPrelude + "while true do\n  pcall(function() while true do end end)\nend\n", "s.lua:", {"too long"});
}

TEST_CASE("a loop inside a coroutine ends too") {
  require_error(kPrelude + "coroutine.wrap(function()\n  while true do end\nend)()\n", "s.lua:", {"too long"});
}

TEST_CASE("a memory bomb ends with an error that names its line") {
  require_line3_error("local t = {} for i=1,1e9 do t[i]=string.rep('x',1000) end", {"not enough memory"});
}

TEST_CASE("one huge allocation ends with an error that names its line") {
  require_line3_error("local s = string.rep('x', 1 << 30)", {"not enough memory"});
}

TEST_CASE("a memory bomb that swallows its errors with pcall still ends") {
  require_error(kPrelude + "local t = {}\nwhile true do pcall(function() t[#t + 1] = string.rep('x', 4096) end) end\n",
                "s.lua:", {"not enough memory"});
}

TEST_CASE("a finalizer calling the API while the state closes does no harm") {
  load_ok("setmetatable({}, { __gc = function() proxy { name = 'late', listen = 'h:1', upstream = 'h:2' } end })\n");
}

namespace {

// Draws of math.random as the scenario sees them, carried out through toxic attributes.
const char* kRandomScenario = R"(
local p = proxy { name = 'p', listen = '127.0.0.1:0', upstream = 'h:1' }
p:toxic { type = 'latency', latency = math.random(1, 1000000000), jitter = math.random(1000000000) }
p:toxic { type = 'bandwidth', rate = math.floor(math.random() * 1e9) }
)";

std::map<std::string, int64_t> draws(const std::string& prefix, std::optional<uint64_t> seed = std::nullopt) {
  const Scenario s = load_ok(prefix + kRandomScenario, seed);
  auto values = s.proxies.at(0).toxics.at(0).attributes;
  values["rate"] = s.proxies.at(0).toxics.at(1).attributes.at("rate");
  return values;
}

}  // namespace

TEST_CASE("math.random is the same for the same seed and differs for another seed") {
  CHECK(draws("seed(42)") == draws("seed(42)"));
  CHECK(draws("seed(42)") != draws("seed(43)"));
  CHECK(draws("") == draws("seed(1)"));  // no seed() means seed 1
}

TEST_CASE("the --seed override wins over seed() for the Scenario and for math.random") {
  const Scenario s = load_ok("seed(42)", 7);
  CHECK(s.seed == 7);
  CHECK(s.seed_set);
  CHECK(load_ok("", 7).seed == 7);
  CHECK_FALSE(load_ok("", 7).seed_set);
  CHECK(draws("seed(42)", 7) == draws("seed(7)"));
  CHECK(draws("seed(42)", 7) != draws("seed(42)"));
}

TEST_CASE("math.random keeps Lua's argument forms") {
  load_ok(R"(
    for _ = 1, 2000 do
      local f = math.random()
      assert(math.type(f) == "float" and f >= 0 and f < 1)
      local a = math.random(6)
      assert(math.type(a) == "integer" and a >= 1 and a <= 6)
      local b = math.random(-3, 3)
      assert(math.type(b) == "integer" and b >= -3 and b <= 3)
      assert(math.random(5, 5) == 5)
      assert(math.type(math.random(0)) == "integer")
      local c = math.random(math.mininteger, math.maxinteger)
      assert(math.type(c) == "integer")
    end
    local seen = {}
    for _ = 1, 200 do seen[math.random(3)] = true end
    assert(seen[1] and seen[2] and seen[3], "every value of a small range comes up")
    math.randomseed(5) local x = math.random(1 << 40)
    math.randomseed(5) assert(math.random(1 << 40) == x, "randomseed restarts the sequence")
  )");
  require_line3_error("math.random(3, 1)", {"interval is empty"});
  require_line3_error("math.random(1, 2, 3)", {"wrong number of arguments"});
  require_line3_error("math.random(1.5)", {"number has no integer representation"});
}

TEST_CASE("a scenario file is read from disk and a missing one is a clear error") {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("lua_loader_test_" + std::to_string(::getpid()) + ".lua")).string();
  {
    std::ofstream out(path);
    out << "seed(9)\nproxy { name = 'f', listen = '127.0.0.1:0', upstream = 'h:1' }\nseed(-1)\n";
  }
  LoadResult bad = load_scenario_file(path);
  CHECK(bad.error.rfind(path + ":3: ", 0) == 0);
  {
    std::ofstream out(path);
    out << "seed(9)\nproxy { name = 'f', listen = '127.0.0.1:0', upstream = 'h:1' }\n";
  }
  LoadResult good = load_scenario_file(path);
  std::remove(path.c_str());
  REQUIRE(good.scenario.has_value());
  CHECK(good.scenario->seed == 9);
  CHECK(good.scenario->path == path);

  LoadResult missing = load_scenario_file("/nonexistent/scenario.lua");
  REQUIRE_FALSE(missing.scenario.has_value());
  CHECK(missing.error.find("/nonexistent/scenario.lua") == 0);
  CHECK(missing.error.find("No such file") != std::string::npos);
}

TEST_CASE("upstream_tls = true makes a postgres proxy speak TLS to its server, tls_verify may opt out") {
  const Scenario s = load_ok(R"(
proxy { name = "pg", listen = "127.0.0.1:0", upstream = "db:5432", protocol = "postgres", upstream_tls = true }
proxy { name = "pg2", listen = "127.0.0.1:0", upstream = "db:5432", protocol = "postgres", upstream_tls = true,
        tls_verify = false }
proxy { name = "pg3", listen = "127.0.0.1:0", upstream = "db:5432", protocol = "postgres" }
)");
  REQUIRE(s.proxies.size() == 3);
  CHECK(s.proxies[0].upstream_tls);
  CHECK(s.proxies[0].tls_verify);
  CHECK(s.proxies[1].upstream_tls);
  CHECK_FALSE(s.proxies[1].tls_verify);
  CHECK_FALSE(s.proxies[2].upstream_tls);
}

TEST_CASE("ttl: rules and toxics switch themselves off after a positive number of seconds") {
  const Scenario s = load_ok(R"(
local p = proxy { name = "p", listen = "127.0.0.1:0", upstream = "h:1", protocol = "http" }
p:rule { name = "r", ttl = 1.5, action = drop() }
p:toxic { type = "latency", latency = 5, ttl = 30 }
)");
  REQUIRE(s.proxies.size() == 1);
  CHECK(s.proxies[0].rules[0].ttl_s == 1.5);
  CHECK(s.proxies[0].toxics[0].ttl_s == 30.0);
  for (const char* bad : {"p:rule { name = 'r', ttl = 0, action = drop() }", "p:rule { name = 'r', ttl = -1, action = drop() }",
                          "p:toxic { type = 'latency', ttl = 0 }"}) {
    std::string error = load_error(std::string("local p = proxy { name = 'p', listen = '127.0.0.1:0', upstream = 'h:1', "
                                               "protocol = 'http' }\n") + bad);
    CHECK(error.find("ttl must be a positive number of seconds") != std::string::npos);
    CHECK(error.find("s.lua:2") != std::string::npos);
  }
}
