// bandwidth toxic: lets bytes through at `rate` KB/s (1 KB = 1000 bytes), in 100 ms pieces.
#include <algorithm>
#include <deque>

#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {

class Bandwidth final : public Toxic {
 public:
  Bandwidth(const ToxicSpec& spec, ToxicEnv& env, ToxicOutput& out)
      : out_(out),
        env_(env),
        rate_(std::max<int64_t>(0, spec.attr("rate"))),
        // bandwidth.go sends pieces of rate*100 bytes every 100 ms so slow links stay smooth.
        piece_max_(rate_ > 0 ? static_cast<size_t>(std::min<int64_t>(rate_, int64_t{1} << 40) * 100) : 0),
        timer_(env.make_timer([this] { send_due(); })) {}

  void on_data(Chunk chunk) override {
    if (ended_ || chunk.len == 0) return;
    if (rate_ == 0) {  // rate 0 means unlimited, as in Toxiproxy
      out_.push(std::move(chunk));
      return;
    }
    held_ += chunk.len;
    queue_.push_back({env_.now_us(), std::move(chunk)});
    if (!waiting_) send_due();
  }

  void on_end() override {
    if (ended_) return;
    ended_ = true;
    if (queue_.empty()) out_.end();  // otherwise after the last piece, as bandwidth.go does
  }

  size_t buffered() const override { return held_; }

  void flush() override {
    timer_->stop();
    const bool end_held = ended_ && !queue_.empty();
    while (!queue_.empty()) {
      out_.push(std::move(queue_.front().chunk));
      queue_.pop_front();
    }
    held_ = 0;
    if (end_held) out_.end();
  }

 private:
  struct Held {
    uint64_t entered_us;  // when the chunk reached this stage: an idle link earns no burst credit
    Chunk chunk;
  };

  // Transmission time of n bytes, in µs; the remainder carries over so long runs do not drift.
  uint64_t cost_us(size_t n) {
    const unsigned __int128 num = static_cast<unsigned __int128>(n) * 1000 + carry_;
    carry_ = static_cast<uint64_t>(num % static_cast<uint64_t>(rate_));
    return static_cast<uint64_t>(num / static_cast<uint64_t>(rate_));
  }

  // Each piece leaves once its bytes would have crossed the link: rate-limited from when the
  // link became free or the chunk arrived, whichever is later. Due times chain off the previous
  // due time, not the timer's firing, so timer lateness is made up (as bandwidth.go offsets it).
  void send_due() {
    waiting_ = false;
    while (!queue_.empty()) {
      Held& head = queue_.front();
      if (!piece_due_) {
        const uint64_t base = std::max(head.entered_us, free_at_us_);
        if (base > free_at_us_) carry_ = 0;
        piece_len_ = std::min(head.chunk.len, piece_max_);
        piece_due_us_ = base + cost_us(piece_len_);
        piece_due_ = true;
      }
      const uint64_t now = env_.now_us();
      if (piece_due_us_ > now) {
        waiting_ = true;
        timer_->start(piece_due_us_ - now);
        return;
      }
      piece_due_ = false;
      free_at_us_ = piece_due_us_;
      held_ -= piece_len_;
      Chunk piece;
      if (piece_len_ == head.chunk.len) {
        piece = std::move(head.chunk);
        queue_.pop_front();
      } else {
        piece = head.chunk.split_front(piece_len_);
      }
      out_.push(std::move(piece));
    }
    if (ended_) out_.end();
  }

  ToxicOutput& out_;
  ToxicEnv& env_;
  const int64_t rate_;  // KB/s, which is bytes per millisecond
  const size_t piece_max_;
  std::unique_ptr<Timer> timer_;
  std::deque<Held> queue_;
  size_t held_ = 0;
  uint64_t free_at_us_ = 0;  // when the last piece finished crossing the link
  uint64_t carry_ = 0;
  bool waiting_ = false;
  bool piece_due_ = false;  // piece_len_/piece_due_us_ describe the head piece
  size_t piece_len_ = 0;
  uint64_t piece_due_us_ = 0;
  bool ended_ = false;
};

}  // namespace

std::unique_ptr<Toxic> make_bandwidth(const ToxicSpec& spec, const ToxicContext&, ToxicEnv& env, ToxicOutput& out) {
  return std::make_unique<Bandwidth>(spec, env, out);
}

}  // namespace faultline::faults::toxics
