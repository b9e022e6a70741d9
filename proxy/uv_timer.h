// faults::Timer and faults::ToxicEnv on a libuv loop: the only place toxics meet libuv.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>

#include "faults/toxic.h"

namespace faultline::proxy {

// A one-shot timer. The uv handle lives in a small heap block freed in its close callback, so
// destroying the UvTimer at any time (even from inside its own callback) is safe.
class UvTimer final : public faults::Timer {
 public:
  UvTimer(uv_loop_t* loop, std::function<void()> on_fire);
  ~UvTimer() override;
  UvTimer(const UvTimer&) = delete;
  UvTimer& operator=(const UvTimer&) = delete;

  void start(uint64_t delay_us) override;
  void stop() override;

 private:
  struct Block;
  Block* block_;
};

class LoopEnv final : public faults::ToxicEnv {
 public:
  explicit LoopEnv(uv_loop_t* loop) : loop_(loop) {}
  uint64_t now_us() override;
  std::unique_ptr<faults::Timer> make_timer(std::function<void()> on_fire) override;

 private:
  uv_loop_t* loop_;
};

}  // namespace faultline::proxy
