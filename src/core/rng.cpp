#include "uel/core/rng.h"

#include <utility>

#include "uel/core/error.h"

namespace uel {
namespace {
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
}  // namespace

uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

uint64_t derive_key(uint64_t key, uint64_t sub) {
  return mix64(key ^ mix64(sub + kGolden));
}

uint64_t stream_key(uint64_t seed, RngPurpose purpose, int rank, int64_t epoch) {
  uint64_t key = mix64(seed + kGolden);
  key = derive_key(key, static_cast<uint64_t>(purpose));
  key = derive_key(key, static_cast<uint64_t>(rank));
  return derive_key(key, static_cast<uint64_t>(epoch));
}

uint64_t Rng::next_u64() {
  state_ += kGolden;
  return mix64(state_);
}

double Rng::uniform() {
  return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

int64_t Rng::below(int64_t n) {
  UEL_CHECK(n > 0, "Rng::below needs a positive bound, got {}", n);
  const uint64_t bound = static_cast<uint64_t>(n);
  // Reject the top partial block so every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x = next_u64();
  while (x >= limit) {
    x = next_u64();
  }
  return static_cast<int64_t>(x % bound);
}

void shuffle(std::vector<int64_t>& values, Rng& rng) {
  for (int64_t i = static_cast<int64_t>(values.size()) - 1; i > 0; --i) {
    std::swap(values[i], values[rng.below(i + 1)]);
  }
}

}  // namespace uel
