#pragma once

// Recall@K of the unseen-category protocol (REFERENCES.md §1.7, §3.6): a query is a hit at K when
// at least one of its K most similar gallery items (inner product of L2-normalised embeddings,
// the query itself excluded) shares its label. Ties go to the gallery row earlier in the global
// order (eval/top_k.h), so the result does not depend on the world size.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"

namespace uel::eval {

struct RecallResult {
  std::vector<int64_t> ks;
  std::vector<double> recall;  // percent, one per K
  int64_t queries = 0;
};

// The general form. gallery: this rank's rows [n_r, D] with labels [n_r] (global order = ranks'
// rows in rank order); queries [nq, D], labels [nq] and exclude [nq] (the global gallery row
// each query must skip, -1 for none, or undefined) are the same on every rank. Collective.
RecallResult recall_at_k(
    const at::Tensor& gallery,
    const at::Tensor& gallery_labels,
    const at::Tensor& queries,
    const at::Tensor& query_labels,
    const at::Tensor& exclude,
    const std::vector<int64_t>& ks,
    comm::Communicator& comm);

// The standard protocol: the test set is queries and gallery at once; each rank holds its shard
// of it (features [n_r, D], labels [n_r]), in rank order. Collective.
RecallResult recall_at_k(
    const at::Tensor& local_features,
    const at::Tensor& local_labels,
    const std::vector<int64_t>& ks,
    comm::Communicator& comm);

}  // namespace uel::eval
