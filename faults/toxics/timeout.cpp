// timeout toxic: drops every byte; closes the connection after `timeout` ms without data (0 = never).
#include <algorithm>

#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {

// Attribute in ms to µs; absurd values are capped (about 34 years) so the product cannot overflow.
uint64_t ms_to_us(int64_t ms) { return static_cast<uint64_t>(std::clamp<int64_t>(ms, 0, int64_t{1} << 40)) * 1000; }

class Timeout final : public Toxic {
 public:
  Timeout(const ToxicSpec& spec, ToxicEnv& env, ToxicOutput& out)
      : out_(out), timeout_us_(ms_to_us(spec.attr("timeout"))), timer_(env.make_timer([this] { fire(); })) {}

  void start() override { restart(); }

  // timeout.go makes a fresh time.After on every loop turn, so each chunk it swallows starts the
  // countdown again: the close comes `timeout` ms after the last data (or after the start).
  void on_data(Chunk) override {
    if (done_) return;
    restart();
  }

  // On EOF timeout.go closes its output at once: the end passes on, nothing else does.
  void on_end() override {
    if (done_) return;
    done_ = true;
    timer_->stop();
    out_.end();
  }

 private:
  void restart() {
    if (timeout_us_ > 0) timer_->start(timeout_us_);
  }

  void fire() {
    if (done_) return;
    done_ = true;
    out_.abort(false);
  }

  ToxicOutput& out_;
  const uint64_t timeout_us_;
  std::unique_ptr<Timer> timer_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Toxic> make_timeout(const ToxicSpec& spec, const ToxicContext&, ToxicEnv& env, ToxicOutput& out) {
  return std::make_unique<Timeout>(spec, env, out);
}

}  // namespace faultline::faults::toxics
