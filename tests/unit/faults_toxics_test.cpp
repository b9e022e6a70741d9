// The seven byte-level toxics, one at a time, on a fake clock: what passes, when, and how it closes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "fake_toxic_env.h"
#include "faults/decider.h"

using namespace faultline::faults;
using namespace faultline::faults::testing;

namespace {
constexpr uint64_t kMs = 1000;

// After a stream has closed nothing may be left armed, and nothing may follow the close.
void require_quiet_after_close(Rig& rig) {
  REQUIRE((rig.out.ended || rig.out.aborted));
  rig.env.run_until_idle();
  CHECK(rig.env.armed() == 0);
  CHECK(rig.out.after_close == 0);
}
}  // namespace

// ---------------------------------------------------------------- latency

TEST_CASE("latency delays each chunk by latency and keeps order") {
  Rig rig("latency", {{"latency", 100}});
  rig.feed("first ");
  rig.env.advance(30 * kMs);
  rig.feed("second");
  rig.env.advance(69 * kMs);
  CHECK(rig.out.pieces.empty());
  CHECK(rig.toxic->buffered() == 12);
  rig.env.advance(1 * kMs);
  REQUIRE(rig.out.pieces.size() == 1);
  CHECK(rig.out.pieces[0].at_us == 100 * kMs);
  rig.env.advance(30 * kMs);
  REQUIRE(rig.out.pieces.size() == 2);
  CHECK(rig.out.pieces[1].at_us == 130 * kMs);
  CHECK(rig.out.bytes() == "first second");
  CHECK(rig.toxic->buffered() == 0);
}

TEST_CASE("latency measures the delay from when the bytes arrived, not when the stage saw them") {
  Rig rig("latency", {{"latency", 100}});
  rig.env.advance(40 * kMs);
  rig.toxic->on_data(make_chunk("late", 0, 0));  // read at t=0, handed over at t=40 ms
  rig.env.advance(59 * kMs);
  CHECK(rig.out.pieces.empty());
  rig.env.advance(1 * kMs);
  REQUIRE(rig.out.pieces.size() == 1);
  CHECK(rig.out.pieces[0].at_us == 100 * kMs);
}

TEST_CASE("latency passes the end right after the last delayed chunk") {
  Rig rig("latency", {{"latency", 50}});
  rig.feed("abc");
  rig.env.advance(10 * kMs);
  rig.toxic->on_end();
  CHECK_FALSE(rig.out.ended);
  rig.env.advance(40 * kMs);
  CHECK(rig.out.bytes() == "abc");
  CHECK(rig.out.ended);
  CHECK(rig.out.end_us == 50 * kMs);
  require_quiet_after_close(rig);

  Rig idle("latency", {{"latency", 50}});
  idle.toxic->on_end();
  CHECK(idle.out.ended);  // nothing held: the end is not delayed
  require_quiet_after_close(idle);
}

TEST_CASE("latency uses one re-armed timer, not one per chunk") {
  Rig rig("latency", {{"latency", 10}});
  for (int i = 0; i < 50; ++i) {
    rig.feed("x");
    rig.env.advance(1 * kMs);
  }
  rig.env.run_until_idle();
  CHECK(rig.out.byte_count() == 50);
  CHECK(rig.env.timers_made() <= 2);
}

TEST_CASE("jitter stays within latency plus or minus jitter and spreads across it") {
  Rig rig("latency", {{"latency", 100}, {"jitter", 20}});
  // One chunk at a time, far apart, so each delivery shows its own delay.
  int64_t lo = 1'000'000, hi = -1;
  for (int i = 0; i < 200; ++i) {
    const uint64_t t0 = rig.env.now_us();
    rig.feed("j");
    rig.env.advance(200 * kMs);
    REQUIRE(rig.out.pieces.size() == static_cast<size_t>(i + 1));
    const int64_t d = static_cast<int64_t>(rig.out.pieces.back().at_us - t0) / 1000;
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  CHECK(lo >= 80);
  CHECK(hi <= 120);
  CHECK(lo < 88);  // a toxic that ignored jitter would sit at 100
  CHECK(hi > 112);
}

TEST_CASE("jitter is deterministic per offset") {
  auto delays = [](uint64_t seed, uint64_t connection) {
    Rig rig("latency", {{"latency", 100}, {"jitter", 50}}, make_ctx(seed, connection, "lat"));
    std::vector<uint64_t> d;
    for (int i = 0; i < 40; ++i) {
      const uint64_t t0 = rig.env.now_us();
      rig.feed("0123456789");
      rig.env.advance(500 * kMs);
      d.push_back(rig.out.pieces.back().at_us - t0);
    }
    return d;
  };
  const auto a = delays(7, 3);
  CHECK(a == delays(7, 3));
  CHECK(a != delays(8, 3));
  CHECK(a != delays(7, 4));
  // The draw is decide(seed, "proxy/toxic", connection, chunk offset), in whole ms like Toxiproxy.
  for (size_t i = 0; i < a.size(); ++i) {
    const int64_t ms = 100 + decide(7, "p/lat", "3", i * 10).range(-50, 49);
    CHECK(a[i] == static_cast<uint64_t>(ms) * 1000);
  }
}

TEST_CASE("jitter never lets a chunk overtake the one before it") {
  Rig rig("latency", {{"latency", 20}, {"jitter", 20}});
  const std::string payload = pattern_bytes(3000);
  for (size_t i = 0; i < payload.size(); i += 10) {
    rig.feed(std::string_view(payload).substr(i, 10));
    rig.env.advance(1 * kMs);
  }
  rig.toxic->on_end();
  rig.env.run_until_idle();
  CHECK(rig.out.bytes() == payload);
  for (size_t i = 1; i < rig.out.pieces.size(); ++i) CHECK(rig.out.pieces[i - 1].at_us <= rig.out.pieces[i].at_us);
  CHECK(rig.out.ended);
  require_quiet_after_close(rig);
}

// ---------------------------------------------------------------- bandwidth

TEST_CASE("bandwidth 100 KB/s moves 300 KB in 3 s") {
  Rig rig("bandwidth", {{"rate", 100}});
  const std::string payload = pattern_bytes(300'000);
  for (size_t i = 0; i < payload.size(); i += 65536) rig.feed(std::string_view(payload).substr(i, 65536));
  CHECK(rig.toxic->buffered() == 300'000);
  rig.toxic->on_end();

  rig.env.advance(1500 * kMs);
  // Half way, about half the bytes (within one 100 ms piece: pieces follow the 64 KiB reads).
  CHECK(rig.out.byte_count() >= 140'000);
  CHECK(rig.out.byte_count() <= 150'000);
  CHECK(rig.toxic->buffered() == 300'000 - rig.out.byte_count());
  rig.env.advance(1499 * kMs);
  CHECK(rig.out.byte_count() < 300'000);
  CHECK_FALSE(rig.out.ended);
  rig.env.advance(1 * kMs);
  CHECK(rig.out.byte_count() == 300'000);
  CHECK(rig.out.bytes() == payload);
  CHECK(rig.out.pieces.back().at_us == 3000 * kMs);
  CHECK(rig.out.ended);
  CHECK(rig.toxic->buffered() == 0);
  // Smooth: pieces of at most rate*100 bytes, one every 100 ms.
  for (const auto& p : rig.out.pieces) CHECK(p.bytes.size() <= 10'000);
  CHECK(rig.out.pieces.front().at_us == 100 * kMs);
  require_quiet_after_close(rig);
}

TEST_CASE("bandwidth counts 1 KB as 1000 bytes, sending each chunk after its transmission time") {
  Rig rig("bandwidth", {{"rate", 10}});  // 10 bytes per ms
  rig.feed_size(1000);
  rig.env.advance(99 * kMs);
  CHECK(rig.out.pieces.empty());
  rig.env.advance(1 * kMs);
  CHECK(rig.out.byte_count() == 1000);
}

TEST_CASE("bandwidth gives an idle link no burst credit") {
  Rig rig("bandwidth", {{"rate", 100}});
  rig.feed_size(1000);
  rig.env.advance(1000 * kMs);
  REQUIRE(rig.out.pieces.size() == 1);
  CHECK(rig.out.pieces[0].at_us == 10 * kMs);
  rig.feed_size(1000);
  rig.env.advance(100 * kMs);
  REQUIRE(rig.out.pieces.size() == 2);
  CHECK(rig.out.pieces[1].at_us == 1010 * kMs);
}

TEST_CASE("bandwidth rate 0 is unlimited") {
  Rig rig("bandwidth", {{"rate", 0}});
  rig.feed_size(100'000);
  CHECK(rig.out.byte_count() == 100'000);
  CHECK(rig.toxic->buffered() == 0);
  rig.toxic->on_end();
  CHECK(rig.out.ended);
}

TEST_CASE("bandwidth reports the bytes it holds, so the proxy can stop reading") {
  Rig rig("bandwidth", {{"rate", 1}});  // 1000 bytes/s
  rig.feed_size(5000);
  rig.feed_size(3000);
  CHECK(rig.toxic->buffered() == 8000);
  rig.env.advance(2000 * kMs);
  CHECK(rig.out.byte_count() == 2000);
  CHECK(rig.toxic->buffered() == 6000);
}

// ---------------------------------------------------------------- slow_close

TEST_CASE("slow_close delays only the end") {
  Rig rig("slow_close", {{"delay", 250}});
  rig.feed("hello");
  CHECK(rig.out.bytes() == "hello");  // data is not delayed
  rig.env.advance(10 * kMs);
  rig.toxic->on_end();
  rig.env.advance(249 * kMs);
  CHECK_FALSE(rig.out.ended);
  rig.env.advance(1 * kMs);
  CHECK(rig.out.ended);
  CHECK(rig.out.end_us == 260 * kMs);
  CHECK_FALSE(rig.out.aborted);
  require_quiet_after_close(rig);
}

// ---------------------------------------------------------------- timeout

TEST_CASE("timeout drops data and closes after N ms") {
  Rig rig("timeout", {{"timeout", 100}});
  rig.feed("dropped");
  rig.env.advance(99 * kMs);
  CHECK_FALSE(rig.out.aborted);
  rig.env.advance(1 * kMs);
  CHECK(rig.out.aborted);
  CHECK_FALSE(rig.out.rst);  // a close, not a reset
  CHECK(rig.out.abort_us == 100 * kMs);
  CHECK(rig.out.pieces.empty());
  require_quiet_after_close(rig);
}

TEST_CASE("timeout counts from the last data it swallowed, as Toxiproxy's loop does") {
  Rig rig("timeout", {{"timeout", 100}});
  rig.env.advance(60 * kMs);
  rig.feed("a");
  rig.env.advance(60 * kMs);
  rig.feed("b");
  rig.env.advance(99 * kMs);
  CHECK_FALSE(rig.out.aborted);
  rig.env.advance(1 * kMs);
  CHECK(rig.out.aborted);
  CHECK(rig.out.abort_us == 220 * kMs);
  CHECK(rig.out.pieces.empty());
}

TEST_CASE("timeout closes after N ms even when no data ever comes") {
  Rig rig("timeout", {{"timeout", 100}});
  rig.env.advance(100 * kMs);
  CHECK(rig.out.aborted);
  CHECK(rig.out.abort_us == 100 * kMs);
}

TEST_CASE("timeout 0 drops data and never closes on its own") {
  Rig rig("timeout", {{"timeout", 0}});
  rig.feed("dropped");
  rig.env.advance(3'600'000 * kMs);
  CHECK(rig.out.pieces.empty());
  CHECK_FALSE(rig.out.aborted);
  CHECK_FALSE(rig.out.ended);
}

TEST_CASE("timeout passes the end on when the reading side closes") {
  Rig rig("timeout", {{"timeout", 100}});
  rig.feed("dropped");
  rig.env.advance(50 * kMs);
  rig.toxic->on_end();
  CHECK(rig.out.ended);
  CHECK(rig.out.pieces.empty());
  rig.env.advance(1000 * kMs);
  CHECK_FALSE(rig.out.aborted);  // the timer was stopped
  require_quiet_after_close(rig);
}

// ---------------------------------------------------------------- reset_peer

TEST_CASE("reset_peer resets after timeout") {
  Rig rig("reset_peer", {{"timeout", 100}});
  rig.env.advance(500 * kMs);
  CHECK_FALSE(rig.out.aborted);  // the countdown starts at the first data, not at connect
  rig.feed("request");
  rig.env.advance(99 * kMs);
  CHECK_FALSE(rig.out.aborted);
  rig.feed("more");
  rig.env.advance(1 * kMs);
  CHECK(rig.out.aborted);
  CHECK(rig.out.rst);
  CHECK(rig.out.abort_us == 600 * kMs);
  CHECK(rig.out.pieces.empty());  // nothing passes before the reset
  require_quiet_after_close(rig);
}

TEST_CASE("reset_peer with timeout 0 resets at the first data") {
  Rig rig("reset_peer", {{"timeout", 0}});
  rig.feed("x");
  CHECK(rig.out.aborted);
  CHECK(rig.out.rst);
  CHECK(rig.out.pieces.empty());
  rig.feed("y");
  rig.toxic->on_end();
  require_quiet_after_close(rig);
}

TEST_CASE("reset_peer resets after timeout when the reading side closes first") {
  Rig rig("reset_peer", {{"timeout", 30}});
  rig.toxic->on_end();
  CHECK_FALSE(rig.out.ended);  // EOF is swallowed like data
  rig.env.advance(30 * kMs);
  CHECK(rig.out.aborted);
  CHECK(rig.out.rst);
  require_quiet_after_close(rig);
}

// ---------------------------------------------------------------- slicer

namespace {
struct SliceRun {
  std::string bytes;
  std::vector<uint64_t> cuts;
  std::vector<CollectingOutput::Piece> pieces;
};

SliceRun slice(const std::string& payload, const std::vector<size_t>& reads, ToxicContext ctx = make_ctx(),
               int64_t average = 100, int64_t variation = 50) {
  Rig rig("slicer", {{"average_size", average}, {"size_variation", variation}, {"delay", 0}}, ctx);
  size_t pos = 0;
  for (size_t n : reads) {
    rig.feed(std::string_view(payload).substr(pos, n));
    pos += n;
  }
  rig.toxic->on_end();
  REQUIRE(rig.out.ended);
  REQUIRE(rig.out.after_close == 0);
  return {rig.out.bytes(), rig.out.cuts(), rig.out.pieces};
}

// Random-looking but fixed read sizes that add up to `total`.
std::vector<size_t> ragged_reads(size_t total, uint64_t salt) {
  std::vector<size_t> reads;
  for (size_t done = 0, i = 0; done < total; ++i) {
    size_t n = static_cast<size_t>(decide(salt, "reads", "", i).range(1, 700));
    n = std::min(n, total - done);
    reads.push_back(n);
    done += n;
  }
  return reads;
}
}  // namespace

TEST_CASE("slicer boundaries do not depend on read sizes") {
  const std::string payload = pattern_bytes(10'240);
  const SliceRun whole = slice(payload, {payload.size()});
  CHECK(whole.bytes == payload);
  CHECK(whole.cuts.size() > 60);  // ~100-byte slices: 10 KB is cut about 100 times

  for (uint64_t salt : {1, 2, 3}) {
    const auto reads = ragged_reads(payload.size(), salt);
    const SliceRun ragged = slice(payload, reads);
    CHECK(ragged.bytes == payload);
    // Every drawn cut is still there; the only extra cuts are at read boundaries.
    std::set<uint64_t> expected(whole.cuts.begin(), whole.cuts.end());
    uint64_t end = 0;
    for (size_t i = 0; i + 1 < reads.size(); ++i) expected.insert(end += reads[i]);
    CHECK(std::set<uint64_t>(ragged.cuts.begin(), ragged.cuts.end()) == expected);
  }
}

TEST_CASE("slicer sizes are average plus or minus variation, drawn by offset") {
  const std::string payload = pattern_bytes(10'000);
  const SliceRun run = slice(payload, {payload.size()}, make_ctx(5, 2, "sl"), 100, 30);
  REQUIRE(run.pieces.size() > 2);
  size_t smallest = SIZE_MAX, largest = 0;
  uint64_t start = 0;
  for (size_t i = 0; i + 1 < run.pieces.size(); ++i) {  // the last slice is cut short by the end
    const size_t n = run.pieces[i].bytes.size();
    CHECK(static_cast<int64_t>(n) == decide(5, "p/sl", "2", start).range(70, 130));
    CHECK(run.pieces[i].offset == start);
    smallest = std::min(smallest, n);
    largest = std::max(largest, n);
    start += n;
  }
  CHECK(smallest >= 70);
  CHECK(largest <= 130);
  CHECK(smallest < largest);
}

TEST_CASE("slicer cuts the same way on every run and differently per seed and connection") {
  const std::string payload = pattern_bytes(5000);
  const auto a = slice(payload, {5000}, make_ctx(1, 1));
  CHECK(a.cuts == slice(payload, {5000}, make_ctx(1, 1)).cuts);
  CHECK(a.cuts != slice(payload, {5000}, make_ctx(2, 1)).cuts);
  CHECK(a.cuts != slice(payload, {5000}, make_ctx(1, 2)).cuts);
}

TEST_CASE("slicer without variation cuts exactly every average_size bytes, never below 1") {
  const std::string payload = pattern_bytes(1000);
  const auto even = slice(payload, {1000}, make_ctx(), 64, 0);
  for (size_t i = 0; i < even.cuts.size(); ++i) CHECK(even.cuts[i] == (i + 1) * 64);
  const auto tiny = slice(payload, {1000}, make_ctx(), 1, 10);  // variation > average: sizes floor at 1
  CHECK(tiny.bytes == payload);
  for (const auto& p : tiny.pieces) CHECK(!p.bytes.empty());
}

TEST_CASE("slicer waits delay microseconds after each slice") {
  Rig rig("slicer", {{"average_size", 10}, {"size_variation", 0}, {"delay", 500}});
  rig.feed(pattern_bytes(35));
  REQUIRE(rig.out.pieces.size() == 1);  // the first slice goes at once
  CHECK(rig.toxic->buffered() == 25);
  rig.toxic->on_end();
  rig.env.run_until_idle();
  REQUIRE(rig.out.pieces.size() == 4);
  for (size_t i = 0; i < 4; ++i) CHECK(rig.out.pieces[i].at_us == i * 500);
  CHECK(rig.out.bytes() == pattern_bytes(35));
  CHECK(rig.out.ended);
  CHECK(rig.out.end_us == 2000);  // after the pause that follows the last slice
  CHECK(rig.toxic->buffered() == 0);
  require_quiet_after_close(rig);
}

// ---------------------------------------------------------------- limit_data

TEST_CASE("limit_data 1000 delivers exactly 1000 bytes then closes") {
  Rig rig("limit_data", {{"bytes", 1000}});
  const std::string payload = pattern_bytes(1200);
  rig.feed(std::string_view(payload).substr(0, 300));
  rig.feed(std::string_view(payload).substr(300, 300));
  CHECK_FALSE(rig.out.aborted);
  rig.feed(std::string_view(payload).substr(600, 600));  // crosses the limit: split
  CHECK(rig.out.bytes() == payload.substr(0, 1000));
  CHECK(rig.out.aborted);
  CHECK_FALSE(rig.out.rst);
  rig.feed("more");
  rig.toxic->on_end();
  CHECK(rig.out.byte_count() == 1000);
  require_quiet_after_close(rig);
}

TEST_CASE("limit_data closes as soon as a chunk reaches the limit exactly") {
  Rig rig("limit_data", {{"bytes", 10}});
  rig.feed("0123456789");
  CHECK(rig.out.bytes() == "0123456789");
  CHECK(rig.out.aborted);
  CHECK_FALSE(rig.out.rst);
}

TEST_CASE("limit_data 0 closes at the first data, not at connect") {
  Rig rig("limit_data", {{"bytes", 0}});
  rig.env.advance(1000 * kMs);
  CHECK_FALSE(rig.out.aborted);
  rig.feed("x");
  CHECK(rig.out.aborted);
  CHECK(rig.out.pieces.empty());
  require_quiet_after_close(rig);
}

TEST_CASE("limit_data passes a short stream and its end untouched") {
  Rig rig("limit_data", {{"bytes", 1000}});
  rig.feed("short");
  rig.toxic->on_end();
  CHECK(rig.out.bytes() == "short");
  CHECK(rig.out.ended);
  CHECK_FALSE(rig.out.aborted);
  require_quiet_after_close(rig);
}
