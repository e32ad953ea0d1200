#pragma once

// Pair-based metric losses on cosine similarity over the global batch, for UDML-SS (pseudo-labels
// from k-means; REFERENCES.md §3.3).
//
// Layout: each rank holds b L2-normalised embeddings (the anchors) and their labels; the keys are
// the all-gathered global batch of B = N*b rows, with gradients to every rank's rows through both
// anchors and keys (the seed differentiates S = X X^T in both factors). S_ij = <x_i, k_j>.
// Positives of anchor i: keys of its label other than itself, excluded by global index (the
// seed's "S < 1" test drops or keeps self as rounding falls). Negatives: keys of other labels.
//
// Convention (as isif_loss): the returned loss is this rank's share, sum over its anchors of l_i
// divided by b, so its average over ranks is the global-batch loss sum_i l_i / B, and so is its
// gradient once GradSync averages over ranks. Skipped anchors contribute 0 and still count in B.
//
// Collectives, the same on every rank: all-gather of the embeddings (reduce-scatter of their
// gradient in backward), all-gather of the labels, one all-reduce of 5 float64 diagnostics.

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"

namespace uel::losses {

// The seed's WeightLoss (--loss Weight). Per anchor, after mining,
//   l_i = (1/pos_scale) log(1 + sum_p exp(-pos_scale (S_p - lambda)))
//       + (1/neg_scale) log(1 + sum_n exp(neg_scale (S_n - lambda)))
// in log-sum-exp form (the seed exponentiates directly, which overflows float32 for large scales).
// Mining on the unmined sets: keep negatives with S_n + mining_margin > min_p S_p and positives
// with S_p - mining_margin < max_n S_n. An anchor with no positive, no negative, or an empty set
// after mining is skipped. The seed's flags swap the MS paper's names: pos_scale is --beta
// (2 in the published recipe), neg_scale is --alpha (40 in the recipe, 30 by the code's default).
// lambda is the seed's hard-coded base 0.5 (its --margin is ignored); mining_margin its fixed 0.1.
struct MultiSimilarityConfig {
  double pos_scale = 2;
  double neg_scale = 40;
  double lambda = 0.5;
  double mining_margin = 0.1;
};

// Cosine contrastive loss. Per anchor
//   l_i = mean_p (1 - S_p) + mean_n relu(S_n - margin)
// with an empty mean taken as 0 (means per anchor keep the loss independent of the batch size).
struct ContrastiveConfig {
  double margin = 0.5;
};

// A loss ready for backward and the global diagnostics the seed logs (equal on every rank).
struct PairLoss {
  at::Tensor loss;
  // Fraction of the B anchors skipped: multi-similarity, those contributing 0 as above (the seed
  // logs it as "prec"); contrastive, those with no positive (only pushed away).
  double skipped_fraction = 0;
  // Mean S over all positive (negative) pairs of the global batch, before mining; NaN when there
  // is none. (The seed logs the last anchor's means only.)
  double mean_pos = 0;
  double mean_neg = 0;
};

// ConfigError naming the --udml.* option; no collective, so callable while options are read.
void validate(const MultiSimilarityConfig& config);
void validate(const ContrastiveConfig& config);

// embeddings: this rank's [b, D] rows (float32/float64 on comm's device; half and bfloat16 are
// computed in float32), b > 0 and the same on every rank. labels: [b] int64 on the same device.
PairLoss multi_similarity_loss(
    const at::Tensor& embeddings,
    const at::Tensor& labels,
    comm::Communicator& comm,
    const MultiSimilarityConfig& config);

PairLoss contrastive_loss(
    const at::Tensor& embeddings,
    const at::Tensor& labels,
    comm::Communicator& comm,
    const ContrastiveConfig& config);

}  // namespace uel::losses
