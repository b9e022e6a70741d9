// libuv timers for toxics: millisecond resolution from libuv, rounded up so a delay is never short.
#include "proxy/uv_timer.h"

#include <spdlog/spdlog.h>

namespace faultline::proxy {

// libuv's loop clock may be coarse (CLOCK_MONOTONIC_COARSE) and cached per iteration, so a timer can
// fire a few ms before the precise clock toxics read; the block re-arms until the precise due time.
struct UvTimer::Block {
  uv_timer_t handle;
  std::function<void()> on_fire;
  uint64_t due_us = 0;
};

namespace {
void arm(uv_timer_t* handle, uint64_t delay_us, uv_timer_cb cb) {
  uv_update_time(handle->loop);
  uv_timer_start(handle, cb, (delay_us + 999) / 1000, 0);
}
}  // namespace

UvTimer::UvTimer(uv_loop_t* loop, std::function<void()> on_fire) : block_(new Block) {
  uv_timer_init(loop, &block_->handle);
  block_->handle.data = block_;
  block_->on_fire = std::move(on_fire);
}

UvTimer::~UvTimer() {
  uv_timer_stop(&block_->handle);
  block_->on_fire = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&block_->handle),
           [](uv_handle_t* h) { delete static_cast<Block*>(h->data); });
}

void UvTimer::start(uint64_t delay_us) {
  block_->due_us = uv_hrtime() / 1000 + delay_us;
  static const uv_timer_cb on_timer = [](uv_timer_t* h) {
    auto* block = static_cast<Block*>(h->data);
    if (!block->on_fire) return;
    const uint64_t now = uv_hrtime() / 1000;
    if (now < block->due_us) {
      arm(h, block->due_us - now, on_timer);
      return;
    }
    // Copy first: the callback may destroy the UvTimer (and with it on_fire).
    auto fire = block->on_fire;
    try {
      fire();
    } catch (const std::exception& e) {  // never across a libuv callback
      spdlog::error("toxic timer: internal error: {}", e.what());
    }
  };
  arm(&block_->handle, delay_us, on_timer);
}

void UvTimer::stop() { uv_timer_stop(&block_->handle); }

uint64_t LoopEnv::now_us() { return uv_hrtime() / 1000; }

std::unique_ptr<faults::Timer> LoopEnv::make_timer(std::function<void()> on_fire) {
  return std::make_unique<UvTimer>(loop_, std::move(on_fire));
}

}  // namespace faultline::proxy
