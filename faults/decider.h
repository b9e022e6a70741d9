// The only source of randomness: every fault decision is a pure function of its inputs.
#pragma once

#include <cstdint>
#include <string_view>

namespace faultline::faults {

// FNV-1a 64-bit: stable across builds and machines, unlike std::hash.
uint64_t stable_hash(std::string_view bytes) noexcept;

// A small SplitMix64 generator handed out for one decision.
class Rng {
 public:
  explicit Rng(uint64_t state) noexcept : state_(state) {}
  uint64_t next() noexcept;
  // Uniform in [0, 1).
  double uniform01() noexcept;
  // Uniform integer in [lo, hi] (inclusive); returns lo when hi <= lo.
  int64_t range(int64_t lo, int64_t hi) noexcept;

 private:
  uint64_t state_;
};

// The generator for the `ordinal`-th decision of `name` within key value `key`.
Rng decide(uint64_t seed, std::string_view name, std::string_view key, uint64_t ordinal) noexcept;

}  // namespace faultline::faults
