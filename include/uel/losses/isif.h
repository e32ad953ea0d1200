#pragma once

// The invariant and spreading instance feature loss (Ye et al., CVPR 2019), as the seed's
// BatchCriterion computes it, over the global batch.
//
// Query i (an L2-normalised embedding) scores every key j of the global batch with
// s_ij = <f_i, k_j> / T, its own key excluded. With D_i = sum_{j != i} exp(s_ij):
//   P_i  = exp(s_i,p(i)) / D_i           (p(i): the other view of the same instance)
//   Q_ij = exp(s_ij) / D_i
//   L    = -mean_i [ log P_i + sum_{j != i, p(i)} log(1 - Q_ij) ]
// computed in log-sum-exp form (log(1 - Q) = log(-expm1(log Q))), so T = 0.05 neither overflows
// nor gives 0 * inf. The seed normalises over rows (the code), not over columns (the paper's
// equation), and detaches the keys; key_grad = true propagates through them as well.

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"

namespace uel::losses {

struct IsifConfig {
  double temperature = 0.1;  // > 0: checked once, where --isif.temperature is parsed
  bool key_grad = false;
};

// embeddings: this rank's [2b, D]: rows 0..b-1 the first views, rows b..2b-1 the second views of
// the same b instances. Queries are the local rows, keys the all-gathered rows of every rank.
// Returns the mean over the local queries; averaged over ranks it is the global-batch loss.
at::Tensor isif_loss(
    const at::Tensor& embeddings, comm::Communicator& comm, const IsifConfig& config);

}  // namespace uel::losses
