#pragma once

// Weighted kNN of the lemniscate/ISIF protocol (DESIGN.md §3): cosine similarity of
// L2-normalised features, the K most similar training items vote for their class with weight
// exp(s / tau). The training features stay sharded: each rank ranks the queries against its own
// shard, and the per-rank top-K candidates are merged into the global top-K (eval/top_k.h; ties
// go to the training row earlier in the global order).

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"
#include "uel/eval/top_k.h"

namespace uel::eval {

struct KnnConfig {
  int64_t k = 200;
  double tau = 0.1;
};

// Top-n: the query's class got votes and fewer than n classes got more.
struct KnnResult {
  double top1 = 0;  // percent
  double top5 = 0;
  int64_t queries = 0;
};

// The votes of weighted kNN, [nq, num_classes]: each of the top-k rows votes for its label with
// weight exp(similarity / tau) (padding with 0).
at::Tensor knn_votes(const TopK& top, int64_t num_classes, double tau);

// train_features: this rank's shard [n_r, D] (n_r may be 0) with labels [n_r]; queries: every
// query [Nq, D] with labels [Nq] on every rank. Collective; every rank gets the result.
KnnResult weighted_knn(
    const at::Tensor& train_features,
    const at::Tensor& train_labels,
    const at::Tensor& queries,
    const at::Tensor& query_labels,
    int64_t num_classes,
    const KnnConfig& config,
    comm::Communicator& comm);

}  // namespace uel::eval
