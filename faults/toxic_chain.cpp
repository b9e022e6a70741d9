// Wires toxic stages together: each stage's output is the next stage's input.
#include "faults/toxic_chain.h"

#include <algorithm>

#include "faults/toxics/registry.h"

namespace faultline::faults {

// Output of a stage: forwards data and the end to the next stage. A reset goes straight to the sink; a
// clean abort travels down as an end, so later stages deliver what they hold first (Toxiproxy's
// stub.Close() is an EOF to the next stub), and the tail turns it back into abort(false).
class ToxicChain::Link final : public ToxicOutput {
 public:
  Link(ToxicOutput& sink, bool& closing) : sink_(sink), closing_(closing) {}
  void set_next(Toxic* next) { next_ = next; }
  void push(Chunk chunk) override {
    if (next_)
      next_->on_data(std::move(chunk));
    else
      sink_.push(std::move(chunk));
  }
  void end() override {
    if (next_)
      next_->on_end();
    else if (closing_)
      sink_.abort(false);
    else
      sink_.end();
  }
  void abort(bool rst) override {
    if (rst || !next_) {
      sink_.abort(rst);
      return;
    }
    closing_ = true;
    next_->on_end();
  }

 private:
  ToxicOutput& sink_;
  bool& closing_;
  Toxic* next_ = nullptr;  // null for the tail, the output of the last stage
};

ToxicChain::ToxicChain(const std::vector<const ToxicSpec*>& specs, ToxicContext ctx, ToxicEnv& env, ToxicOutput& sink)
    : ctx_(std::move(ctx)), env_(env), sink_(sink) {
  // Built back to front so each stage can be handed its output at construction.
  std::vector<Stage> reversed;
  Toxic* next = nullptr;
  for (auto it = specs.rbegin(); it != specs.rend(); ++it) {
    if (!find_toxic_type((*it)->type)) continue;  // the loader rejects unknown types; never reached
    reversed.push_back(make_stage(**it, next));
    next = reversed.back().toxic.get();
  }
  stages_.assign(std::make_move_iterator(reversed.rbegin()), std::make_move_iterator(reversed.rend()));
}

ToxicChain::~ToxicChain() = default;

ToxicChain::Stage ToxicChain::make_stage(const ToxicSpec& spec, Toxic* next) {
  Stage s;
  s.spec = &spec;
  s.out = std::make_unique<Link>(sink_, closing_);
  s.out->set_next(next);
  ToxicContext stage_ctx = ctx_;
  stage_ctx.toxic = spec.name;
  s.toxic = find_toxic_type(spec.type)->make(spec, stage_ctx, env_, *s.out);
  return s;
}

void ToxicChain::relink(size_t i) {
  if (i > 0) stages_[i - 1].out->set_next(i < stages_.size() ? stages_[i].toxic.get() : nullptr);
}

void ToxicChain::start() {
  started_ = true;
  for (size_t i = 0; i < stages_.size(); ++i) stages_[i].toxic->start();
}

void ToxicChain::push(Chunk chunk) {
  if (stages_.empty()) {
    sink_.push(std::move(chunk));
    return;
  }
  stages_.front().toxic->on_data(std::move(chunk));
}

void ToxicChain::end() {
  ended_ = true;
  if (stages_.empty()) {
    sink_.end();
    return;
  }
  stages_.front().toxic->on_end();
}

size_t ToxicChain::buffered() const {
  size_t n = 0;
  for (const auto& s : stages_) n += s.toxic->buffered();
  return n;
}

size_t ToxicChain::find(const ToxicSpec* spec) const {
  for (size_t i = 0; i < stages_.size(); ++i)
    if (stages_[i].spec == spec) return i;
  return stages_.size();
}

bool ToxicChain::insert(size_t pos, const ToxicSpec& spec) {
  if (ended_ || closing_ || !find_toxic_type(spec.type)) return false;
  pos = std::min(pos, stages_.size());
  Toxic* next = pos < stages_.size() ? stages_[pos].toxic.get() : nullptr;
  stages_.insert(stages_.begin() + static_cast<std::ptrdiff_t>(pos), make_stage(spec, next));
  relink(pos);
  if (started_) stages_[pos].toxic->start();
  return true;
}

bool ToxicChain::remove(const ToxicSpec* spec) {
  const size_t i = find(spec);
  if (i == stages_.size()) return false;
  // Bypassed first, so nothing new reaches it while it lets go; then what it holds goes on.
  Stage gone = std::move(stages_[i]);
  stages_.erase(stages_.begin() + static_cast<std::ptrdiff_t>(i));
  relink(i);
  gone.toxic->flush();
  return true;
}

bool ToxicChain::replace(const ToxicSpec* old, const ToxicSpec& now) {
  const size_t i = find(old);
  if (i == stages_.size() || !find_toxic_type(now.type)) return false;
  if (ended_) return remove(old);  // the stream is over: a fresh stage would wait for data that never comes
  Toxic* next = i + 1 < stages_.size() ? stages_[i + 1].toxic.get() : nullptr;
  Stage fresh = make_stage(now, next);
  Stage gone = std::move(stages_[i]);
  stages_[i] = std::move(fresh);
  relink(i);
  if (started_) stages_[i].toxic->start();
  // The old stage's output now feeds the new stage: what it held is delayed (or paced) afresh.
  gone.out->set_next(stages_[i].toxic.get());
  gone.toxic->flush();
  return true;
}

}  // namespace faultline::faults
