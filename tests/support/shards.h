#pragma once

// Rows of a whole tensor as the ranks of a test hold them (distributed tests of eval, cluster).

#include <ATen/ATen.h>

#include "uel/comm/communicator.h"
#include "uel/core/shard.h"

namespace uel::test {

// This rank's contiguous shard_range of `all`'s rows.
inline at::Tensor even_split(const at::Tensor& all, const comm::Communicator& comm) {
  const ShardRange s = shard_range(all.size(0), comm.rank(), comm.size());
  return all.slice(0, s.begin, s.end);
}

// Every row on ranks 0..P-2, none on the last rank (P > 1).
inline at::Tensor last_rank_empty(const at::Tensor& all, const comm::Communicator& comm) {
  if (comm.size() == 1)
    return all;
  if (comm.rank() == comm.size() - 1)
    return all.slice(0, 0, 0);
  const ShardRange s = shard_range(all.size(0), comm.rank(), comm.size() - 1);
  return all.slice(0, s.begin, s.end);
}

}  // namespace uel::test
