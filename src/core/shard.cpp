#include "uel/core/shard.h"

#include "uel/core/error.h"

namespace uel {

ShardRange shard_range(int64_t n, int rank, int world) {
  UEL_CHECK(world > 0, "world size must be positive, got {}", world);
  UEL_CHECK(rank >= 0 && rank < world, "rank {} outside [0, {})", rank, world);
  UEL_CHECK(n >= 0, "cannot shard a negative count {}", n);
  const int64_t base = n / world;
  const int64_t extra = n % world;
  const int64_t begin = rank * base + (rank < extra ? rank : extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

int shard_owner(int64_t n, int world, int64_t i) {
  UEL_CHECK(i >= 0 && i < n, "item {} outside [0, {})", i, n);
  const int64_t base = n / world;
  const int64_t extra = n % world;
  // The first `extra` shards hold base + 1 items.
  const int64_t big = extra * (base + 1);
  if (i < big) {
    return static_cast<int>(i / (base + 1));
  }
  return static_cast<int>(extra + (i - big) / base);
}

}  // namespace uel
