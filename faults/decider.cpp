// SplitMix64 over a stable hash of (seed, name, key, ordinal).
#include "faults/decider.h"

namespace faultline::faults {

namespace {
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t fnv_mix(uint64_t h, std::string_view bytes) noexcept {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= kFnvPrime;
  }
  return h;
}

uint64_t splitmix(uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

uint64_t stable_hash(std::string_view bytes) noexcept { return fnv_mix(kFnvOffset, bytes); }

uint64_t Rng::next() noexcept {
  state_ += 0x9e3779b97f4a7c15ULL;
  return splitmix(state_);
}

double Rng::uniform01() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

int64_t Rng::range(int64_t lo, int64_t hi) noexcept {
  if (hi <= lo) return lo;
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
  if (span == 0) return static_cast<int64_t>(next());  // the full 64-bit range
  return lo + static_cast<int64_t>(next() % span);
}

Rng decide(uint64_t seed, std::string_view name, std::string_view key, uint64_t ordinal) noexcept {
  // Length-prefix each part so ("ab","c") and ("a","bc") differ.
  uint64_t h = kFnvOffset;
  auto mix_u64 = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= kFnvPrime;
    }
  };
  mix_u64(seed);
  mix_u64(name.size());
  h = fnv_mix(h, name);
  mix_u64(key.size());
  h = fnv_mix(h, key);
  mix_u64(ordinal);
  return Rng(splitmix(h));
}

}  // namespace faultline::faults
