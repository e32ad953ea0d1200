#pragma once

// Margin loss with distance-weighted sampling (Wu et al., "Sampling Matters in Deep Embedding
// Learning", ICCV 2017; the seed is MXNet Gluon's embedding_learning example), over the global
// batch (DESIGN.md §3).
//
// The global batch is m classes x k items in class blocks: items [c k, (c + 1) k) share a label.
// Anchor a pairs with each of the k - 1 other members p_j of its block and with one negative n_j
// per positive, drawn from the global batch with probability proportional to 1/q(d) (d the
// distance to a), where q(d) ∝ d^(n-2) (1 - d^2/4)^((n-3)/2) is the density of distances
// between uniform points of the unit sphere in R^n (n = D). So the triplets are (a, p_j, n_j)
// for j = 0..k-2, k - 1 per anchor, B (k - 1) in the global batch.
//
// Loss over the T = B (k - 1) triplets, with d(x, y) = sqrt(|x - y|^2 + 1e-8) and beta_a the
// boundary of the anchor (one learnable scalar, or one per class indexed by the anchor's label):
//   L = ( sum_t [relu(d_ap - beta_a + margin) + relu(beta_a - d_an + margin)]
//         + nu sum_t beta_a ) / #{non-zero hinge terms}
// The count is of non-zero terms (pos and neg separately) over the global batch. With none, L
// is 0 with zero gradients (the seed divides by zero there; the regulariser alone would only
// shrink beta with no data term).

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"

namespace uel::losses {

struct MarginConfig {
  double margin = 0.2;  // alpha
  double beta_init = 1.2;
  double nu = 0;        // weight of the regulariser nu * sum over triplets of beta
  double cutoff = 0.5;  // sampling distances are clipped below here (bounds the weights)
  double nonzero_loss_cutoff = 1.4;  // negatives at or beyond this distance are never drawn
  bool per_class_beta = false;
};

// Checks the options alone (no tensors, no communication): callable before any collective.
void validate(const MarginConfig& config);

// Negatives for anchors [begin, end) of the global batch `global` ([B, D], L2-normalised rows;
// read without gradient) with labels [B]: [end - begin, k - 1] indices into the global batch.
//   d     = sqrt(max(2 - 2 <x_a, x_i>, 0)), clipped below at cutoff
//   log w = (2 - D) log d - (D - 3)/2 log(max(1 - d^2/4, 1e-8)), minus its row maximum
//   w     = 0 for items of the anchor's class (itself included) and for d >= nonzero_loss_cutoff
// A row left with no admissible item draws uniformly over the other classes' items. Draw (a, j)
// is the inverse CDF of row a at u = (derive_key(key, a (k - 1) + j) >> 11) 2^-53, with a the
// global anchor index: the same on every rank, world size and device. No communication.
at::Tensor distance_weighted_negatives(
    const at::Tensor& global,
    const at::Tensor& labels,
    int64_t begin,
    int64_t end,
    int64_t items_per_class,
    uint64_t key,
    const MarginConfig& config);

struct MarginLoss {
  // This rank's share of the loss times the world size: averaged over ranks it is the
  // global-batch loss, and so is its gradient (embeddings and beta) averaged over ranks
  // (GradSync averages).
  at::Tensor loss;
  // Non-zero hinge terms / all 2 B (k - 1) terms of the global batch (detached, for logging).
  at::Tensor active_fraction;
  // [b, k - 1] this rank's anchors' negatives, indices into the global batch.
  at::Tensor negatives;
};

// embeddings: this rank's [b, D] L2-normalised rows of the global batch (rank r holds rows
// [r b, (r + 1) b)); labels: their classes ([b]). beta: the boundary, a scalar tensor or, with
// per_class_beta, [num_classes] indexed by label; the caller owns it as a parameter. key:
// stream_key(seed, RngPurpose::kMarginNegatives, 0, step). The global batch must be class
// blocks of items_per_class (>= 2) items; a block may straddle ranks.
//
// Collective, the same three on every rank in this order: all_gather_with_grad(embeddings),
// all_gather(labels), all_reduce(count of non-zero terms). The count is all-reduced rather than
// recomputed from the gathered batch on every rank: that would repeat every rank's sampling
// (O(B^2 D) per rank instead of O(b B D)) and rely on bitwise-equal distances across ranks.
MarginLoss margin_loss(
    const at::Tensor& embeddings,
    const at::Tensor& labels,
    const at::Tensor& beta,
    uint64_t key,
    int64_t items_per_class,
    comm::Communicator& comm,
    const MarginConfig& config);

}  // namespace uel::losses
