// Toxics applied in order to one direction of a connection, ending in a sink (the socket). Stages can be
// added, changed and removed while the connection runs (Toxiproxy's semantics for toxics changed through
// its API): a stage taken out first lets go of what it holds.
#pragma once

#include <memory>
#include <vector>

#include "faults/scenario.h"
#include "faults/toxic.h"

namespace faultline::faults {

class ToxicChain {
 public:
  // Builds the stages for `specs` (already filtered to the toxics active on this connection);
  // the last stage feeds `sink`. `ctx` is copied per stage with the toxic's name filled in.
  ToxicChain(const std::vector<const ToxicSpec*>& specs, ToxicContext ctx, ToxicEnv& env, ToxicOutput& sink);
  ~ToxicChain();
  ToxicChain(const ToxicChain&) = delete;
  ToxicChain& operator=(const ToxicChain&) = delete;

  bool empty() const noexcept { return stages_.empty(); }
  size_t size() const noexcept { return stages_.size(); }
  void start();
  void push(Chunk chunk);
  void end();
  size_t buffered() const;

  // --- changes while the connection runs ---
  // The spec of stage i, and the position of the stage built from `spec` (size() when there is none).
  const ToxicSpec* spec_at(size_t i) const { return stages_[i].spec; }
  size_t find(const ToxicSpec* spec) const;
  // A stage for `spec` at position `pos` (clamped to size()); started at once if the chain has started.
  // Nothing is added once the stream has ended: no data will come to it. False when nothing was added.
  bool insert(size_t pos, const ToxicSpec& spec);
  // Takes out the stage built from `spec`: what it holds goes on at once (and an end it held back), then
  // it is gone. False when the chain has no such stage.
  bool remove(const ToxicSpec* spec);
  // A changed toxic in place of the stage built from `old`: the old stage lets go of what it holds into
  // the new one, which starts afresh with the new attributes (Toxiproxy restarts an updated toxic).
  bool replace(const ToxicSpec* old, const ToxicSpec& now);

 private:
  class Link;
  struct Stage {
    const ToxicSpec* spec = nullptr;
    std::unique_ptr<Link> out;  // feeds the next stage, or the sink after the last one
    std::unique_ptr<Toxic> toxic;
  };
  Stage make_stage(const ToxicSpec& spec, Toxic* next);
  void relink(size_t i);  // stage i-1 (or nothing) now feeds stage i (or the sink)

  std::vector<Stage> stages_;
  ToxicContext ctx_;
  ToxicEnv& env_;
  ToxicOutput& sink_;
  bool closing_ = false;  // a stage aborted cleanly; the end reaching the tail becomes abort(false)
  bool started_ = false;
  bool ended_ = false;  // end() came in: the stream is over
};

}  // namespace faultline::faults
