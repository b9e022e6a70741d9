// Toxics applied in order to one direction of a connection, ending in a sink (the socket).
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
  void start();
  void push(Chunk chunk);
  void end();
  size_t buffered() const;

 private:
  class Link;
  std::vector<std::unique_ptr<Link>> links_;
  std::vector<std::unique_ptr<Toxic>> stages_;
  ToxicOutput& sink_;
  bool closing_ = false;  // a stage aborted cleanly; the end reaching the tail becomes abort(false)
};

}  // namespace faultline::faults
