// limit_data toxic: forwards the first `bytes` bytes of the stream, then closes the connection.
#include <algorithm>

#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {

class LimitData final : public Toxic {
 public:
  LimitData(const ToxicSpec& spec, ToxicOutput& out)
      : out_(out), remaining_(static_cast<uint64_t>(std::max<int64_t>(0, spec.attr("bytes")))) {}

  // limit_data.go checks the limit only when a chunk arrives, so bytes = 0 closes at the first
  // data, not at connect; a chunk that reaches the limit exactly closes at once.
  void on_data(Chunk chunk) override {
    if (done_) return;
    if (chunk.len > remaining_) {
      chunk = chunk.split_front(static_cast<size_t>(remaining_));
    }
    remaining_ -= chunk.len;
    if (chunk.len > 0) out_.push(std::move(chunk));
    if (remaining_ == 0 && !done_) {
      done_ = true;
      out_.abort(false);
    }
  }

  void on_end() override {
    if (done_) return;
    done_ = true;
    out_.end();
  }

 private:
  ToxicOutput& out_;
  uint64_t remaining_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Toxic> make_limit_data(const ToxicSpec& spec, const ToxicContext&, ToxicEnv&, ToxicOutput& out) {
  return std::make_unique<LimitData>(spec, out);
}

}  // namespace faultline::faults::toxics
