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
