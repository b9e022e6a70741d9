// The toxic chain: stages applied in declaration order, buffered bytes summed, aborts reach the sink.
#include <catch2/catch.hpp>

#include <string>

#include "fake_toxic_env.h"
#include "faults/toxic_chain.h"

using namespace faultline::faults;
using namespace faultline::faults::testing;

namespace {
constexpr uint64_t kMs = 1000;

struct ChainRig {
  explicit ChainRig(std::vector<ToxicSpec> s) : specs(std::move(s)), out(env) {
    std::vector<const ToxicSpec*> ptrs;
    for (const auto& spec : specs) ptrs.push_back(&spec);
    chain = std::make_unique<ToxicChain>(ptrs, make_ctx(), env, out);
    chain->start();
  }
  void feed(std::string_view bytes) {
    chain->push(make_chunk(bytes, offset, env.now_us()));
    offset += bytes.size();
  }

  std::vector<ToxicSpec> specs;
  FakeEnv env;
  CollectingOutput out;
  std::unique_ptr<ToxicChain> chain;
  uint64_t offset = 0;
};
}  // namespace

TEST_CASE("a chain applies its toxics in order: latency then limit_data") {
  ChainRig rig({make_spec("latency", {{"latency", 100}}, "lat"), make_spec("limit_data", {{"bytes", 1000}}, "lim")});
  const std::string payload = pattern_bytes(1500);
  rig.feed(payload);
  CHECK(rig.chain->buffered() == 1500);
  rig.env.advance(99 * kMs);
  CHECK_FALSE(rig.out.aborted);  // limit_data sits behind the latency: it has seen nothing yet
  rig.env.advance(1 * kMs);
  CHECK(rig.out.bytes() == payload.substr(0, 1000));
  CHECK(rig.out.aborted);
  CHECK_FALSE(rig.out.rst);
  CHECK(rig.out.abort_us == 100 * kMs);
  CHECK(rig.out.after_close == 0);
}

TEST_CASE("two latency toxics in a chain add their delays") {
  ChainRig rig({make_spec("latency", {{"latency", 50}}, "a"), make_spec("latency", {{"latency", 70}}, "b")});
  rig.feed("hello");
  rig.chain->end();
  rig.env.advance(119 * kMs);
  CHECK(rig.out.pieces.empty());
  rig.env.advance(1 * kMs);
  CHECK(rig.out.bytes() == "hello");
  CHECK(rig.out.pieces[0].at_us == 120 * kMs);
  CHECK(rig.out.ended);
  CHECK(rig.out.end_us == 120 * kMs);
}

TEST_CASE("a chain's slicer feeds its bandwidth limit slice by slice") {
  ChainRig rig({make_spec("slicer", {{"average_size", 100}, {"size_variation", 0}}, "sl"),
                make_spec("bandwidth", {{"rate", 10}}, "bw")});  // 10 bytes per ms
  const std::string payload = pattern_bytes(1000);
  rig.feed(payload);
  rig.chain->end();
  rig.env.advance(10 * kMs);
  REQUIRE(rig.out.pieces.size() == 1);
  CHECK(rig.out.pieces[0].bytes.size() == 100);
  rig.env.advance(90 * kMs);
  CHECK(rig.out.bytes() == payload);
  CHECK(rig.out.pieces.size() == 10);
  CHECK(rig.out.ended);
  CHECK(rig.chain->buffered() == 0);
}

TEST_CASE("an empty chain passes bytes and the end straight to the sink") {
  ChainRig rig({});
  CHECK(rig.chain->empty());
  rig.feed("abc");
  rig.chain->end();
  CHECK(rig.out.bytes() == "abc");
  CHECK(rig.out.ended);
}

TEST_CASE("a clean abort early in a chain lets later stages deliver what they hold, then closes") {
  ChainRig rig({make_spec("limit_data", {{"bytes", 1000}}, "lim"), make_spec("latency", {{"latency", 100}}, "lat")});
  const std::string payload = pattern_bytes(1500);
  rig.feed(payload);
  CHECK_FALSE(rig.out.aborted);  // the 1000 bytes are still inside the latency stage
  rig.env.advance(100 * kMs);
  CHECK(rig.out.bytes() == payload.substr(0, 1000));
  CHECK(rig.out.aborted);
  CHECK_FALSE(rig.out.rst);
  CHECK(rig.out.abort_us == 100 * kMs);
}

TEST_CASE("a reset anywhere in a chain reaches the sink at once") {
  ChainRig rig({make_spec("reset_peer", {{"timeout", 0}}, "rp"), make_spec("latency", {{"latency", 100}}, "lat")});
  rig.feed("hello");
  CHECK(rig.out.aborted);
  CHECK(rig.out.rst);
  CHECK(rig.out.byte_count() == 0);
}

// --- changes while the connection runs (Toxiproxy's API acts on open connections) ---

TEST_CASE("a latency removed from a running chain lets its held bytes go at once, in order") {
  ChainRig rig({make_spec("latency", {{"latency", 1000}}, "lat")});
  rig.feed("one ");
  rig.env.advance(10 * kMs);
  rig.feed("two ");
  rig.env.advance(10 * kMs);
  CHECK(rig.out.pieces.empty());
  REQUIRE(rig.chain->remove(&rig.specs[0]));
  CHECK(rig.out.bytes() == "one two ");
  CHECK(rig.out.pieces.back().at_us == 20 * kMs);
  CHECK(rig.chain->empty());
  CHECK(rig.chain->buffered() == 0);
  rig.feed("three");  // no delay any more
  CHECK(rig.out.bytes() == "one two three");
  CHECK(rig.env.armed() == 0);
  CHECK_FALSE(rig.chain->remove(&rig.specs[0]));  // already gone
}

TEST_CASE("a removed latency that held the end passes it after its bytes") {
  ChainRig rig({make_spec("latency", {{"latency", 1000}}, "lat")});
  rig.feed("last words");
  rig.chain->end();
  CHECK_FALSE(rig.out.ended);
  REQUIRE(rig.chain->remove(&rig.specs[0]));
  CHECK(rig.out.bytes() == "last words");
  CHECK(rig.out.ended);
  CHECK(rig.out.after_close == 0);
}

TEST_CASE("a toxic inserted into a running chain acts on what comes next, in its place") {
  ChainRig rig({make_spec("latency", {{"latency", 100}}, "first")});
  const ToxicSpec added = make_spec("latency", {{"latency", 50}}, "added");
  rig.feed("a");
  rig.env.advance(100 * kMs);
  CHECK(rig.out.bytes() == "a");
  REQUIRE(rig.chain->insert(rig.chain->size(), added));
  CHECK(rig.chain->size() == 2);
  CHECK(rig.chain->spec_at(1) == &added);
  rig.feed("b");
  rig.env.advance(149 * kMs);
  CHECK(rig.out.bytes() == "a");
  rig.env.advance(1 * kMs);  // 100 ms, then 50 ms more: the new stage sits after the first
  CHECK(rig.out.bytes() == "ab");
}

TEST_CASE("a timeout inserted into a started chain starts counting at once; removed, data flows again") {
  ChainRig rig({});
  const ToxicSpec timeout = make_spec("timeout", {{"timeout", 500}}, "t");
  REQUIRE(rig.chain->insert(0, timeout));
  rig.feed("swallowed");
  rig.env.advance(400 * kMs);
  REQUIRE(rig.chain->remove(&timeout));
  rig.env.advance(1000 * kMs);
  CHECK_FALSE(rig.out.aborted);  // its timer went with it
  rig.feed("flows");
  CHECK(rig.out.bytes() == "flows");
}

TEST_CASE("a changed latency delays what the old one held by the new amount, from its arrival") {
  ChainRig rig({make_spec("latency", {{"latency", 1000}}, "lat")});
  const ToxicSpec changed = make_spec("latency", {{"latency", 300}}, "lat");
  rig.feed("held");
  rig.env.advance(100 * kMs);
  REQUIRE(rig.chain->replace(&rig.specs[0], changed));
  CHECK(rig.chain->spec_at(0) == &changed);
  CHECK(rig.out.pieces.empty());
  rig.env.advance(199 * kMs);
  CHECK(rig.out.pieces.empty());
  rig.env.advance(1 * kMs);
  CHECK(rig.out.bytes() == "held");
  CHECK(rig.out.pieces[0].at_us == 300 * kMs);
  rig.feed("next");
  rig.env.advance(300 * kMs);
  CHECK(rig.out.bytes() == "heldnext");
}

TEST_CASE("slow_close and slicer let go of a held end and held bytes when removed") {
  ChainRig rig({make_spec("slicer", {{"average_size", 2}, {"size_variation", 0}, {"delay", 10000}}, "sl"),
                make_spec("slow_close", {{"delay", 5000}}, "sc")});
  rig.feed("abcdef");
  rig.chain->end();
  CHECK(rig.out.bytes() == "ab");
  REQUIRE(rig.chain->remove(&rig.specs[0]));
  CHECK(rig.out.bytes() == "abcdef");
  CHECK_FALSE(rig.out.ended);  // slow_close holds it
  REQUIRE(rig.chain->remove(&rig.specs[1]));
  CHECK(rig.out.ended);
  CHECK(rig.out.after_close == 0);
  rig.env.run_until_idle();
  CHECK(rig.out.after_close == 0);
}

TEST_CASE("nothing is added to a chain whose stream has ended; a change there only lets go") {
  ChainRig rig({make_spec("latency", {{"latency", 100}}, "lat")});
  const ToxicSpec timeout = make_spec("timeout", {{"timeout", 10}}, "t");
  const ToxicSpec changed = make_spec("latency", {{"latency", 900}}, "lat");
  rig.feed("x");
  rig.chain->end();
  CHECK_FALSE(rig.chain->insert(0, timeout));
  REQUIRE(rig.chain->replace(&rig.specs[0], changed));
  CHECK(rig.out.bytes() == "x");
  CHECK(rig.out.ended);
  rig.env.run_until_idle();
  CHECK_FALSE(rig.out.aborted);
}

TEST_CASE("bandwidth removed mid-transfer sends the rest at once") {
  ChainRig rig({make_spec("bandwidth", {{"rate", 1}}, "bw")});  // 1 byte per ms
  const std::string payload = pattern_bytes(1000);
  rig.feed(payload);
  rig.env.advance(150 * kMs);
  CHECK(rig.out.byte_count() == 100);
  REQUIRE(rig.chain->remove(&rig.specs[0]));
  CHECK(rig.out.bytes() == payload);
  rig.env.run_until_idle();
  CHECK(rig.out.bytes() == payload);
}
