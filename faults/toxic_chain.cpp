// Wires toxic stages together: each stage's output is the next stage's input.
#include "faults/toxic_chain.h"

#include "faults/toxics/registry.h"

namespace faultline::faults {

// Output of stage i: forwards data and the end to stage i+1. A reset goes straight to the sink; a
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
    : sink_(sink) {
  // Build back to front so each stage can be handed its output at construction.
  std::vector<std::unique_ptr<Toxic>> reversed;
  links_.push_back(std::make_unique<Link>(sink_, closing_));  // the tail
  ToxicOutput* out = links_.back().get();
  for (auto it = specs.rbegin(); it != specs.rend(); ++it) {
    const ToxicSpec& spec = **it;
    const ToxicType* type = find_toxic_type(spec.type);
    if (!type) continue;  // the loader rejects unknown types; never reached
    ToxicContext stage_ctx = ctx;
    stage_ctx.toxic = spec.name;
    auto stage = type->make(spec, stage_ctx, env, *out);
    auto link = std::make_unique<Link>(sink_, closing_);
    link->set_next(stage.get());
    out = link.get();
    links_.push_back(std::move(link));
    reversed.push_back(std::move(stage));
  }
  stages_.assign(std::make_move_iterator(reversed.rbegin()), std::make_move_iterator(reversed.rend()));
}

ToxicChain::~ToxicChain() = default;

void ToxicChain::start() {
  for (auto& s : stages_) s->start();
}

void ToxicChain::push(Chunk chunk) {
  if (stages_.empty()) {
    sink_.push(std::move(chunk));
    return;
  }
  stages_.front()->on_data(std::move(chunk));
}

void ToxicChain::end() {
  if (stages_.empty()) {
    sink_.end();
    return;
  }
  stages_.front()->on_end();
}

size_t ToxicChain::buffered() const {
  size_t n = 0;
  for (const auto& s : stages_) n += s->buffered();
  return n;
}

}  // namespace faultline::faults
