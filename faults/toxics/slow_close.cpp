// slow_close toxic: data passes untouched; the close is held back for `delay` ms.
#include <algorithm>

#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {

// Attribute in ms to µs; absurd values are capped (about 34 years) so the product cannot overflow.
uint64_t ms_to_us(int64_t ms) { return static_cast<uint64_t>(std::clamp<int64_t>(ms, 0, int64_t{1} << 40)) * 1000; }

class SlowClose final : public Toxic {
 public:
  SlowClose(const ToxicSpec& spec, ToxicEnv& env, ToxicOutput& out)
      : out_(out), delay_us_(ms_to_us(spec.attr("delay"))), timer_(env.make_timer([this] { release(); })) {}

  void on_data(Chunk chunk) override {
    if (ended_) return;
    out_.push(std::move(chunk));
  }

  // slow_close.go sleeps `delay` when it reads EOF, then closes; nothing else is delayed.
  void on_end() override {
    if (ended_) return;
    ended_ = true;
    if (delay_us_ == 0) {
      out_.end();
      return;
    }
    end_held_ = true;
    timer_->start(delay_us_);
  }

  void flush() override {
    timer_->stop();
    release();
  }

 private:
  void release() {
    if (!end_held_) return;
    end_held_ = false;
    out_.end();
  }

  ToxicOutput& out_;
  const uint64_t delay_us_;
  std::unique_ptr<Timer> timer_;
  bool ended_ = false;
  bool end_held_ = false;  // the end came and waits for the delay
};

}  // namespace

std::unique_ptr<Toxic> make_slow_close(const ToxicSpec& spec, const ToxicContext&, ToxicEnv& env, ToxicOutput& out) {
  return std::make_unique<SlowClose>(spec, env, out);
}

}  // namespace faultline::faults::toxics
