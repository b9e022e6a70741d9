// Test doubles for toxics: a manual clock with timers, and an output that records what it got.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "faults/chunk.h"
#include "faults/scenario.h"
#include "faults/toxic.h"
#include "faults/toxics/registry.h"

namespace faultline::faults::testing {

// Time only moves when a test says so; advance() fires due timers in time order (ties in the
// order they were armed), including timers armed by the callbacks it runs.
class FakeEnv final : public ToxicEnv {
 public:
  class FakeTimer final : public Timer {
   public:
    FakeTimer(FakeEnv& env, std::function<void()> cb) : env_(env), cb_(std::move(cb)) { env_.timers_.push_back(this); }
    ~FakeTimer() override { std::erase(env_.timers_, this); }
    void start(uint64_t delay_us) override {
      armed_ = true;
      due_us_ = env_.now_ + delay_us;
      seq_ = env_.next_seq_++;
      ++env_.starts_;
    }
    void stop() override { armed_ = false; }

   private:
    friend class FakeEnv;
    FakeEnv& env_;
    std::function<void()> cb_;
    bool armed_ = false;
    uint64_t due_us_ = 0;
    uint64_t seq_ = 0;
  };

  uint64_t now_us() override { return now_; }
  std::unique_ptr<Timer> make_timer(std::function<void()> on_fire) override {
    ++timers_made_;
    return std::make_unique<FakeTimer>(*this, std::move(on_fire));
  }

  // Moves the clock forward by `us`, firing every timer that falls due on the way.
  void advance(uint64_t us) { advance_to(now_ + us); }
  void advance_to(uint64_t target) {
    while (FakeTimer* t = next_due(target)) {
      now_ = std::max(now_, t->due_us_);
      t->armed_ = false;
      t->cb_();
    }
    now_ = std::max(now_, target);
  }
  // Runs until no timer is armed (bounded, so a toxic that re-arms forever fails instead of hanging).
  void run_until_idle(uint64_t limit_us = 3'600'000'000ULL) {
    const uint64_t stop = now_ + limit_us;
    while (FakeTimer* t = next_due(stop)) {
      now_ = std::max(now_, t->due_us_);
      t->armed_ = false;
      t->cb_();
    }
  }
  size_t armed() const {
    return static_cast<size_t>(std::count_if(timers_.begin(), timers_.end(), [](auto* t) { return t->armed_; }));
  }
  size_t timers_made() const { return timers_made_; }

 private:
  FakeTimer* next_due(uint64_t limit) const {
    FakeTimer* best = nullptr;
    for (FakeTimer* t : timers_) {
      if (!t->armed_ || t->due_us_ > limit) continue;
      if (!best || t->due_us_ < best->due_us_ || (t->due_us_ == best->due_us_ && t->seq_ < best->seq_)) best = t;
    }
    return best;
  }

  uint64_t now_ = 0;
  uint64_t next_seq_ = 0;
  uint64_t starts_ = 0;
  size_t timers_made_ = 0;
  std::vector<FakeTimer*> timers_;
};

// Records every push with the fake time it happened, plus the end and an abort.
class CollectingOutput final : public ToxicOutput {
 public:
  struct Piece {
    uint64_t at_us;
    uint64_t offset;
    std::string bytes;
  };

  explicit CollectingOutput(FakeEnv& env) : env_(env) {}

  void push(Chunk chunk) override {
    if (ended || aborted) ++after_close;
    pieces.push_back({env_.now_us(), chunk.offset, std::string(chunk.view())});
  }
  void end() override {
    if (ended || aborted) ++after_close;
    ended = true;
    end_us = env_.now_us();
  }
  void abort(bool reset) override {
    if (ended || aborted) ++after_close;
    aborted = true;
    rst = reset;
    abort_us = env_.now_us();
  }

  std::string bytes() const {
    std::string all;
    for (const auto& p : pieces) all += p.bytes;
    return all;
  }
  size_t byte_count() const {
    size_t n = 0;
    for (const auto& p : pieces) n += p.bytes.size();
    return n;
  }
  // Bytes pushed at or before time t.
  size_t bytes_by(uint64_t t) const {
    size_t n = 0;
    for (const auto& p : pieces)
      if (p.at_us <= t) n += p.bytes.size();
    return n;
  }
  // Stream offsets where one pushed piece ends and the next begins.
  std::vector<uint64_t> cuts() const {
    std::vector<uint64_t> c;
    uint64_t pos = 0;
    for (size_t i = 0; i + 1 < pieces.size(); ++i) c.push_back(pos += pieces[i].bytes.size());
    return c;
  }

  std::vector<Piece> pieces;
  bool ended = false;
  uint64_t end_us = 0;
  bool aborted = false;
  bool rst = false;
  uint64_t abort_us = 0;
  int after_close = 0;  // calls made after end() or abort(): always a bug

 private:
  FakeEnv& env_;
};

// A spec of `type` with the registry's defaults, overridden by `attrs`.
inline ToxicSpec make_spec(const std::string& type, const std::map<std::string, int64_t>& attrs,
                           const std::string& name = "") {
  ToxicSpec spec;
  spec.type = type;
  spec.name = name.empty() ? type + "_downstream" : name;
  if (const ToxicType* t = find_toxic_type(type))
    for (const auto& a : t->attributes) spec.attributes[a.name] = a.default_value;
  for (const auto& [k, v] : attrs) spec.attributes[k] = v;
  return spec;
}

inline ToxicContext make_ctx(uint64_t seed = 1, uint64_t connection = 1, std::string toxic = "t") {
  // Built whole rather than assigned field by field: GCC 12 -O2 gives a false -Wrestrict there.
  return ToxicContext{seed, std::string("p"), std::move(toxic), connection};
}

inline Chunk make_chunk(std::string_view bytes, uint64_t offset, uint64_t arrived_us) {
  Chunk c;
  c.buf = Buffer::copy_of(bytes);
  c.len = bytes.size();
  c.offset = offset;
  c.arrived_us = arrived_us;
  return c;
}

// One toxic under test, wired to a fake clock and a collecting output, fed like the proxy would:
// offsets run on from the last chunk and arrival is the fake now.
struct Rig {
  explicit Rig(const std::string& type, const std::map<std::string, int64_t>& attrs = {}, ToxicContext ctx = make_ctx())
      : spec(make_spec(type, attrs)), out(env) {
    toxic = find_toxic_type(type)->make(spec, ctx, env, out);
    toxic->start();
  }
  void feed(std::string_view bytes) {
    toxic->on_data(make_chunk(bytes, offset, env.now_us()));
    offset += bytes.size();
  }
  void feed_size(size_t n, char fill = 'x') { feed(std::string(n, fill)); }

  ToxicSpec spec;
  FakeEnv env;
  CollectingOutput out;
  std::unique_ptr<Toxic> toxic;
  uint64_t offset = 0;
};

// A deterministic test payload whose bytes differ, so reordering or loss shows.
inline std::string pattern_bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
  return s;
}

}  // namespace faultline::faults::testing
