#pragma once

// The one helper for sharding arithmetic (memory bank, samplers, k-means, kNN): n items split
// into `world` contiguous ranges whose sizes differ by at most one, the first n % world ranges
// holding the extra item.

#include <cstdint>

namespace uel {

struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const {
    return end - begin;
  }
};

ShardRange shard_range(int64_t n, int rank, int world);

// The rank whose shard holds item i.
int shard_owner(int64_t n, int world, int64_t i);

}  // namespace uel
