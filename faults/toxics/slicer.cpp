// slicer toxic: cuts the stream into slices of average_size ± size_variation bytes, `delay` µs apart.
#include <algorithm>
#include <deque>
#include <string>

#include "faults/decider.h"
#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {

// Caps absurd sizes so average ± variation cannot overflow.
constexpr int64_t kMaxSize = int64_t{1} << 40;

// slicer.go halves each read recursively with random midpoints, so where it cuts depends on how
// the kernel split the reads. We cut on a fixed sequence over stream offsets instead (SPEC §3):
// the slice starting at offset s has a size drawn from decide(..., s); a read that ends inside a
// slice sends the partial piece and the next read continues that slice. Reads add cuts; they never
// move the drawn ones.
class Slicer final : public Toxic {
 public:
  Slicer(const ToxicSpec& spec, const ToxicContext& ctx, ToxicEnv& env, ToxicOutput& out)
      : out_(out),
        average_(std::clamp<int64_t>(spec.attr("average_size"), 1, kMaxSize)),
        variation_(std::clamp<int64_t>(spec.attr("size_variation"), 0, kMaxSize)),
        delay_us_(static_cast<uint64_t>(std::max<int64_t>(0, spec.attr("delay")))),
        seed_(ctx.seed),
        name_(ctx.proxy + "/" + ctx.toxic),
        key_(std::to_string(ctx.connection)),
        timer_(env.make_timer([this] { on_timer(); })) {
    slice_end_ = draw_size(0);
  }

  void on_data(Chunk chunk) override {
    if (ended_ || chunk.len == 0) return;
    held_ += chunk.len;
    queue_.push_back(std::move(chunk));
    if (!cooling_) send();
  }

  void on_end() override {
    if (ended_) return;
    ended_ = true;
    // slicer.go reads EOF only after the pause that follows its last slice.
    if (queue_.empty() && !cooling_) out_.end();
  }

  size_t buffered() const override { return held_; }

  void flush() override {
    timer_->stop();
    const bool end_held = ended_ && (!queue_.empty() || cooling_);
    while (!queue_.empty()) {
      out_.push(std::move(queue_.front()));
      queue_.pop_front();
    }
    held_ = 0;
    cooling_ = false;
    if (end_held) out_.end();
  }

 private:
  uint64_t draw_size(uint64_t slice_start) const {
    const int64_t size = decide(seed_, name_, key_, slice_start).range(average_ - variation_, average_ + variation_);
    return static_cast<uint64_t>(std::max<int64_t>(1, size));
  }

  // Sends the next piece: up to the drawn boundary, or the rest of the held chunk if shorter.
  void send_one() {
    Chunk& head = queue_.front();
    const uint64_t room = slice_end_ - pos_;
    Chunk piece;
    if (room >= head.len) {
      piece = std::move(head);
      queue_.pop_front();
    } else {
      piece = head.split_front(static_cast<size_t>(room));
    }
    pos_ += piece.len;
    held_ -= piece.len;
    if (pos_ == slice_end_) slice_end_ = pos_ + draw_size(pos_);
    out_.push(std::move(piece));
  }

  void send() {
    if (delay_us_ == 0) {
      while (!queue_.empty()) send_one();
      return;
    }
    // slicer.go pauses `delay` after every piece it writes, the last one of a read included.
    send_one();
    cooling_ = true;
    timer_->start(delay_us_);
  }

  void on_timer() {
    cooling_ = false;
    if (!queue_.empty()) {
      send();
    } else if (ended_) {
      out_.end();
    }
  }

  ToxicOutput& out_;
  const int64_t average_;
  const int64_t variation_;
  const uint64_t delay_us_;
  const uint64_t seed_;
  const std::string name_;
  const std::string key_;
  std::unique_ptr<Timer> timer_;
  std::deque<Chunk> queue_;
  size_t held_ = 0;
  uint64_t pos_ = 0;        // stream offset of the next byte to send
  uint64_t slice_end_ = 0;  // stream offset where the current slice ends
  bool cooling_ = false;    // a pause after a piece is running
  bool ended_ = false;
};

}  // namespace

std::unique_ptr<Toxic> make_slicer(const ToxicSpec& spec, const ToxicContext& ctx, ToxicEnv& env, ToxicOutput& out) {
  return std::make_unique<Slicer>(spec, ctx, env, out);
}

}  // namespace faultline::faults::toxics
