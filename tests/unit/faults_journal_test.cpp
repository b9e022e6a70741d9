// Journal lines and replay sets: the shapes of SPEC §4 and the parsing of hostile journal files.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "faults/address.h"
#include "faults/journal.h"
#include "faults/replay.h"

using faultline::faults::Journal;
using faultline::faults::ReplaySet;

TEST_CASE("journal lines start with seq and t_ms and keep the caller's field order") {
  Journal j;
  Journal::Entry e;
  e["proxy"] = "pg";
  e["conn"] = 4;
  e["toxic"] = "latency_downstream";
  e["match"] = 4;
  REQUIRE(j.record(e) == 1);
  REQUIRE(j.record(e) == 2);
  auto lines = j.since(0);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].rfind(R"({"seq":1,"t_ms":)", 0) == 0);
  CHECK(lines[0].find(R"("proxy":"pg","conn":4,"toxic":"latency_downstream","match":4})") != std::string::npos);
  CHECK(j.since(1).size() == 1);
  CHECK(j.since(2).empty());
}

TEST_CASE("journal appends to its file on flush") {
  char path[] = "/tmp/faultline-journal-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    Journal j;
    std::string why;
    REQUIRE(j.open(path, &why));
    Journal::Entry e;
    e["rule"] = "r";
    e["match"] = 1;
    j.record(e);
    j.flush();
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  CHECK(ss.str().find(R"("rule":"r","match":1})") != std::string::npos);
  CHECK(ss.str().back() == '\n');
  std::remove(path);
}

TEST_CASE("a replay set answers exactly the recorded positions and reports the unmet ones") {
  std::string error;
  auto set = ReplaySet::parse(
      R"({"seq":1,"t_ms":1.0,"proxy":"pg","conn":9,"toxic":"latency_downstream","type":"latency","stream":"downstream","match":4})"
      "\n\n"
      R"({"seq":2,"t_ms":2.0,"proxy":"api","conn":3,"rule":"throttle","key":"t1","match":2})"
      "\n",
      "j.jsonl", &error);
  REQUIRE(set);
  CHECK(set->size() == 2);
  CHECK_FALSE(set->toxic_fires("pg", "latency_downstream", 3));
  CHECK(set->toxic_fires("pg", "latency_downstream", 4));
  CHECK_FALSE(set->toxic_fires("other", "latency_downstream", 4));
  auto unmet = set->unmet();
  REQUIRE(unmet.size() == 1);
  CHECK(unmet[0] == "rule 'throttle' at match 2 of key 't1'");
  const auto lines = set->unmet_lines();  // for the run report: the journal's own line
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] == R"({"seq":2,"t_ms":2.0,"proxy":"api","conn":3,"rule":"throttle","key":"t1","match":2})");
  CHECK(set->rule_fires("throttle", "t1", 2));
  CHECK(set->unmet().empty());
  CHECK(set->unmet_lines().empty());
}

TEST_CASE("a broken journal names the file and line") {
  std::string error;
  CHECK_FALSE(ReplaySet::parse("{\"toxic\":\"x\",\"proxy\":\"p\",\"match\":1}\nnot json\n", "j.jsonl", &error));
  CHECK(error == "j.jsonl:2: not a JSON object");
  CHECK_FALSE(ReplaySet::parse("{\"toxic\":\"x\",\"proxy\":\"p\",\"match\":0}\n", "j.jsonl", &error));
  CHECK(error.rfind("j.jsonl:1: missing or invalid \"match\"", 0) == 0);
  CHECK_FALSE(ReplaySet::parse("{\"toxic\":\"x\",\"match\":2}\n", "j.jsonl", &error));
  CHECK(error == "j.jsonl:1: toxic line without \"proxy\"");
  CHECK_FALSE(ReplaySet::parse("{\"seq\":1,\"match\":2}\n", "j.jsonl", &error));
  CHECK(error.find("neither") != std::string::npos);
  CHECK_FALSE(ReplaySet::load("/nonexistent/journal", &error));
  CHECK(error == "/nonexistent/journal: cannot open replay journal");
}

TEST_CASE("address parsing accepts host:port and bracketed IPv6 and names what is wrong") {
  using faultline::faults::parse_host_port;
  std::string why;
  auto a = parse_host_port("127.0.0.1:6379", &why);
  REQUIRE(a);
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 6379);
  auto b = parse_host_port("[::1]:0", &why);
  REQUIRE(b);
  CHECK(b->host == "::1");
  CHECK(b->port == 0);
  CHECK_FALSE(parse_host_port("localhost", &why));
  CHECK(why.find("missing :port") != std::string::npos);
  CHECK_FALSE(parse_host_port("host:99999", &why));
  CHECK(why.find("invalid port '99999'") != std::string::npos);
  CHECK_FALSE(parse_host_port(":80", &why));
  CHECK_FALSE(parse_host_port("::1:80", &why));
  CHECK(why.find("brackets") != std::string::npos);
  CHECK_FALSE(parse_host_port("ho st:80", &why));
}

TEST_CASE("the journal in memory is a ring of the last lines; since() counts seqs across it") {
  Journal j;
  j.set_capacity(3);
  for (int i = 0; i < 5; ++i) j.record({{"rule", "r"}, {"match", i + 1}});
  CHECK(j.size() == 5);
  CHECK(j.first_kept() == 3);
  auto lines = j.since(0);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].rfind(R"({"seq":3,)", 0) == 0);
  CHECK(j.since(3).size() == 2);
  CHECK(j.since(4).size() == 1);
  CHECK(j.since(5).empty());
  CHECK(j.since(99).empty());
}
