// The byte-level toxic interface: a stage that sees chunks and the end of a stream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "faults/chunk.h"

namespace faultline::faults {

// A one-shot timer owned by the stage that made it; destroying it cancels it.
class Timer {
 public:
  virtual ~Timer() = default;
  // (Re)arms the timer to fire once after delay_us microseconds.
  virtual void start(uint64_t delay_us) = 0;
  virtual void stop() = 0;
};

// What a toxic may ask of its surroundings: the clock and timers (libuv in the proxy).
class ToxicEnv {
 public:
  virtual ~ToxicEnv() = default;
  virtual uint64_t now_us() = 0;
  virtual std::unique_ptr<Timer> make_timer(std::function<void()> on_fire) = 0;
};

// Where a stage sends what it lets through: the next stage, or finally the socket.
class ToxicOutput {
 public:
  virtual ~ToxicOutput() = default;
  virtual void push(Chunk chunk) = 0;
  // The stream ended cleanly (the reading side saw EOF): half-close onward.
  virtual void end() = 0;
  // Tear down the whole connection (both sides). rst=false: deliver what was already pushed,
  // then close both sides with FIN. rst=true: reset both sides now (RST), dropping unsent bytes.
  // Nothing pushed after an abort is delivered.
  virtual void abort(bool rst) = 0;
};

// Identity of the connection a toxic acts on, for deterministic draws (SPEC §3).
struct ToxicContext {
  uint64_t seed = 1;
  std::string proxy;        // proxy name
  std::string toxic;        // toxic name
  uint64_t connection = 0;  // ordinal of the connection within its proxy, 1-based
};

class Toxic {
 public:
  virtual ~Toxic() = default;
  // Called once, before any data, when the connection is established.
  virtual void start() {}
  virtual void on_data(Chunk chunk) = 0;
  virtual void on_end() = 0;
  // Bytes held inside this stage (not yet pushed on); used for backpressure.
  virtual size_t buffered() const { return 0; }
  // The stage is taken out of a running chain (its toxic removed or changed): push on at once what it
  // holds, and the end if it received one it has not passed on. Nothing else comes to it after this.
  virtual void flush() {}
};

}  // namespace faultline::faults
