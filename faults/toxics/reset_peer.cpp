// reset_peer toxic: swallows the first data (or EOF), waits `timeout` ms, then resets (RST) both sides.
#include <algorithm>

#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {

// Attribute in ms to µs; absurd values are capped (about 34 years) so the product cannot overflow.
uint64_t ms_to_us(int64_t ms) { return static_cast<uint64_t>(std::clamp<int64_t>(ms, 0, int64_t{1} << 40)) * 1000; }

// reset_peer.go reads one chunk and drops it, sleeps `timeout` without reading further, then
// closes with SO_LINGER 0. Nothing ever passes: forwarded bytes would only let the peer finish
// cleanly before the reset. The countdown starts at the first data or EOF, not at connect.
class ResetPeer final : public Toxic {
 public:
  ResetPeer(const ToxicSpec& spec, ToxicEnv& env, ToxicOutput& out)
      : out_(out), timeout_us_(ms_to_us(spec.attr("timeout"))), timer_(env.make_timer([this] { reset(); })) {}

  void on_data(Chunk) override { trigger(); }
  void on_end() override { trigger(); }

 private:
  void trigger() {
    if (triggered_) return;
    triggered_ = true;
    if (timeout_us_ == 0) {
      reset();
      return;
    }
    timer_->start(timeout_us_);
  }

  void reset() {
    if (reset_) return;
    reset_ = true;
    out_.abort(true);
  }

  ToxicOutput& out_;
  const uint64_t timeout_us_;
  std::unique_ptr<Timer> timer_;
  bool triggered_ = false;
  bool reset_ = false;
};

}  // namespace

std::unique_ptr<Toxic> make_reset_peer(const ToxicSpec& spec, const ToxicContext&, ToxicEnv& env, ToxicOutput& out) {
  return std::make_unique<ResetPeer>(spec, env, out);
}

}  // namespace faultline::faults::toxics
