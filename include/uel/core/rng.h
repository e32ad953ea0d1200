#pragma once

// Reproducible random streams. Every stream is derived from (seed, purpose, rank, epoch) by a
// 64-bit mixing function, so a draw never depends on thread scheduling, on the LibTorch version
// or on how work is split over ranks: callers that must be world-size invariant (augmentation,
// sampling) pass rank 0 and key the stream by sample index instead.

#include <cstdint>
#include <vector>

namespace uel {

enum class RngPurpose : uint64_t {
  kSampler = 1,
  kAugment = 2,
  kSplit = 3,
  kBank = 4,             // memory-bank initial rows
  kNegatives = 5,        // NCE negative draws
  kKMeans = 6,           // k-means initialisation
  kMarginNegatives = 7,  // distance-weighted negatives of the margin loss
};

// SplitMix64's finaliser: a bijection on 64-bit words with full avalanche.
uint64_t mix64(uint64_t x);

uint64_t stream_key(uint64_t seed, RngPurpose purpose, int rank, int64_t epoch);

// A child stream of `key`, e.g. one per sample index.
uint64_t derive_key(uint64_t key, uint64_t sub);

// SplitMix64 generator: the whole state is one counter, so it is trivially checkpointed.
class Rng {
 public:
  explicit Rng(uint64_t key) : state_(key) {}

  uint64_t next_u64();
  // Uniform in [0, 1) with 53 random bits.
  double uniform();
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * uniform();
  }
  // Uniform integer in [0, n), unbiased (rejection).
  int64_t below(int64_t n);
  bool bernoulli(double p) {
    return uniform() < p;
  }

  uint64_t state() const {
    return state_;
  }

 private:
  uint64_t state_;
};

// Fisher-Yates shuffle in place, the one used for every reproducible permutation.
void shuffle(std::vector<int64_t>& values, Rng& rng);

}  // namespace uel
