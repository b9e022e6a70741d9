// latency toxic: holds each chunk for latency ± jitter ms after it arrived, keeping order.
#include <algorithm>
#include <deque>
#include <string>

#include "faults/decider.h"
#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {

// Caps absurd attributes (about 34 years) so sums and the µs product cannot overflow.
constexpr int64_t kMaxMs = int64_t{1} << 40;

class Latency final : public Toxic {
 public:
  Latency(const ToxicSpec& spec, const ToxicContext& ctx, ToxicEnv& env, ToxicOutput& out)
      : out_(out),
        env_(env),
        latency_ms_(std::clamp<int64_t>(spec.attr("latency"), 0, kMaxMs)),
        jitter_ms_(std::clamp<int64_t>(spec.attr("jitter"), 0, kMaxMs)),
        seed_(ctx.seed),
        name_(ctx.proxy + "/" + ctx.toxic),
        key_(std::to_string(ctx.connection)),
        timer_(env.make_timer([this] { flush_due(); })) {}

  void on_data(Chunk chunk) override {
    if (ended_) return;
    // Toxiproxy handles one chunk at a time, so a chunk never overtakes the one before it: it
    // leaves at its own due time or right after its predecessor, whichever is later. The FIFO
    // gives that: flush_due() only looks at the front.
    const uint64_t due = chunk.arrived_us + delay_us(chunk.offset);
    if (queue_.empty() && due <= env_.now_us()) {  // nothing to wait for: skip the timer
      chunk.arrived_us = env_.now_us();
      out_.push(std::move(chunk));
      return;
    }
    held_ += chunk.len;
    queue_.push_back({due, std::move(chunk)});
    if (queue_.size() == 1) arm();
  }

  void on_end() override {
    if (ended_) return;
    ended_ = true;
    // EOF is not delayed itself; it follows the last held chunk (latency.go closes once its
    // loop reads the nil chunk, i.e. after every earlier chunk has been sent).
    if (queue_.empty()) out_.end();
  }

  size_t buffered() const override { return held_; }

  // Toxiproxy's latency toxic, interrupted, sends the chunk it holds at once: "don't drop any data".
  void flush() override {
    timer_->stop();
    const bool end_held = ended_ && !queue_.empty();
    // Not restamped: a changed latency that follows counts its delay from when the chunk arrived, as
    // Toxiproxy's does from the chunk's timestamp.
    while (!queue_.empty()) {
      out_.push(std::move(queue_.front().chunk));
      queue_.pop_front();
    }
    held_ = 0;
    if (end_held) out_.end();
  }

 private:
  struct Held {
    uint64_t due_us;
    Chunk chunk;
  };

  // Toxiproxy draws latency + rand.Int63n(2*jitter) - jitter whole milliseconds, i.e. in
  // [latency-jitter, latency+jitter); we draw the same range, keyed by stream offset (SPEC §3).
  uint64_t delay_us(uint64_t offset) const {
    int64_t ms = latency_ms_;
    if (jitter_ms_ > 0) ms += decide(seed_, name_, key_, offset).range(-jitter_ms_, jitter_ms_ - 1);
    return static_cast<uint64_t>(std::max<int64_t>(0, ms)) * 1000;
  }

  void arm() {
    const uint64_t now = env_.now_us();
    const uint64_t due = queue_.front().due_us;
    timer_->start(due > now ? due - now : 0);
  }

  void flush_due() {
    const uint64_t now = env_.now_us();
    while (!queue_.empty() && queue_.front().due_us <= now) {
      Chunk chunk = std::move(queue_.front().chunk);
      queue_.pop_front();
      held_ -= chunk.len;
      // Restamp so a later latency stage adds its delay on top (Toxiproxy PR #94: latencies stack).
      chunk.arrived_us = now;
      out_.push(std::move(chunk));
    }
    if (!queue_.empty()) {
      arm();
    } else if (ended_) {
      out_.end();
    }
  }

  ToxicOutput& out_;
  ToxicEnv& env_;
  const int64_t latency_ms_;
  const int64_t jitter_ms_;
  const uint64_t seed_;
  const std::string name_;
  const std::string key_;
  std::unique_ptr<Timer> timer_;
  std::deque<Held> queue_;
  size_t held_ = 0;
  bool ended_ = false;
};

}  // namespace

std::unique_ptr<Toxic> make_latency(const ToxicSpec& spec, const ToxicContext& ctx, ToxicEnv& env, ToxicOutput& out) {
  return std::make_unique<Latency>(spec, ctx, env, out);
}

}  // namespace faultline::faults::toxics
