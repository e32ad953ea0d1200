#pragma once

// The sharded top-K merge that weighted kNN and Recall@K share (DESIGN.md §3): the gallery stays
// sharded, every rank ranks the queries against its own rows, and the per-rank top-K candidates
// are merged into the global top-K. Only O(queries * K) values cross ranks.

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"

namespace uel::eval {

struct TopK {
  at::Tensor values;   // [nq, k] inner products, descending; -inf where padded
  at::Tensor indices;  // [nq, k] global gallery rows (int64); -1 where padded
  at::Tensor labels;   // [nq, k] the rows' labels when gallery labels are given; 0 where padded
};

// queries: every query [nq, D] on every rank; gallery: this rank's rows [n_r, D] (n_r may be 0),
// with the global row order being the ranks' rows concatenated in rank order; gallery_labels:
// int64 [n_r] or undefined; exclude: int64 [nq], a global row each query must skip (itself
// when queries are the gallery), -1 for none, or undefined.
//
// Ties go to the row earlier in the global order, so the result is the same for any split of the
// gallery. With fewer than k rows (after exclusion) the rest is padding. Collective; every rank
// gets the whole result, on the queries' device.
TopK sharded_top_k(
    const at::Tensor& queries,
    const at::Tensor& gallery,
    const at::Tensor& gallery_labels,
    int64_t k,
    comm::Communicator& comm,
    const at::Tensor& exclude = {});

}  // namespace uel::eval
