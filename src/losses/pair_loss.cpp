#include "uel/losses/pair_loss.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "uel/comm/autograd.h"
#include "uel/core/error.h"

namespace uel::losses {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Anchor-by-key similarities of the global batch and its pair masks.
struct Pairs {
  at::Tensor sim;       // [b, B], differentiable through anchors and keys
  at::Tensor positive;  // [b, B] bool: same label, not the anchor itself
  at::Tensor negative;  // [b, B] bool: another label
};

Pairs global_pairs(
    const at::Tensor& embeddings,
    const at::Tensor& labels,
    comm::Communicator& comm,
    const char* loss) {
  UEL_CHECK(
      embeddings.dim() == 2 && embeddings.size(0) > 0,
      "{} expects [b, D] embeddings with b > 0, got {}",
      loss,
      c10::str(embeddings.sizes()));
  UEL_CHECK(
      labels.dim() == 1 && labels.size(0) == embeddings.size(0) &&
          labels.scalar_type() == at::kLong && labels.device() == embeddings.device(),
      "{} expects [{}] int64 labels on {}, got {} {} on {}",
      loss,
      embeddings.size(0),
      c10::str(embeddings.device()),
      c10::str(labels.sizes()),
      c10::str(labels.scalar_type()),
      c10::str(labels.device()));
  const int64_t b = embeddings.size(0);
  // Reduced precision is widened to float32: exp(neg_scale * S) overflows float16.
  const bool narrow =
      embeddings.scalar_type() == at::kHalf || embeddings.scalar_type() == at::kBFloat16;
  const at::Tensor anchors = narrow ? embeddings.to(at::kFloat) : embeddings;
  const at::Tensor keys = comm::all_gather_with_grad(embeddings, comm).to(anchors.scalar_type());
  UEL_CHECK(
      keys.size(0) == b * comm.size(),
      "ranks disagree on the local batch size: rank {} has {} rows, the ranks {} in all",
      comm.rank(),
      b,
      keys.size(0));
  const at::Tensor key_labels = comm.all_gather(labels);

  Pairs pairs;
  pairs.sim = anchors.matmul(keys.t());
  const at::Tensor same = labels.view({b, 1}) == key_labels.view({1, -1});
  const at::Tensor self = at::arange(b, labels.options()) + comm.rank() * b;
  pairs.positive = same.scatter(1, self.view({b, 1}), false);
  pairs.negative = same.logical_not();
  return pairs;
}

// The rank's share of the loss and the global diagnostics (one all-reduce of 5 numbers).
PairLoss finish(
    const at::Tensor& per_anchor,
    const at::Tensor& skipped,
    const Pairs& pairs,
    comm::Communicator& comm) {
  const at::Tensor s = pairs.sim.detach().to(at::kDouble);
  at::Tensor stats = at::stack(
      {skipped.sum().to(at::kDouble),
       s.masked_fill(pairs.positive.logical_not(), 0).sum(),
       pairs.positive.sum().to(at::kDouble),
       s.masked_fill(pairs.negative.logical_not(), 0).sum(),
       pairs.negative.sum().to(at::kDouble)});
  comm.all_reduce(stats, comm::ReduceOp::kSum);
  const at::Tensor host = stats.cpu();
  const double* v = host.data_ptr<double>();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  PairLoss out;
  out.loss = per_anchor.sum() / per_anchor.size(0);
  out.skipped_fraction = v[0] / static_cast<double>(per_anchor.size(0) * comm.size());
  out.mean_pos = v[2] > 0 ? v[1] / v[2] : nan;
  out.mean_neg = v[4] > 0 ? v[3] / v[4] : nan;
  return out;
}

// log(1 + sum_{mask} exp(z)) per row, as a log-sum-exp over {0} and the masked z: pairs left
// out are -inf and get a zero gradient, and nothing overflows for large scales.
at::Tensor log1p_sum_exp(const at::Tensor& z, const at::Tensor& mask) {
  const at::Tensor masked = z.masked_fill(mask.logical_not(), -kInf);
  return at::logsumexp(at::cat({at::zeros_like(masked.narrow(1, 0, 1)), masked}, 1), 1);
}

}  // namespace

void validate(const MultiSimilarityConfig& config) {
  UEL_CHECK_CONFIG(
      std::isfinite(config.pos_scale) && config.pos_scale > 0,
      "--udml.pos_scale (the seed's --beta, 2 in its recipe) must be positive, got {}",
      config.pos_scale);
  UEL_CHECK_CONFIG(
      std::isfinite(config.neg_scale) && config.neg_scale > 0,
      "--udml.neg_scale (the seed's --alpha, 40 in its recipe) must be positive, got {}",
      config.neg_scale);
  UEL_CHECK_CONFIG(
      std::isfinite(config.lambda), "--udml.lambda must be finite, got {}", config.lambda);
  UEL_CHECK_CONFIG(
      std::isfinite(config.mining_margin) && config.mining_margin >= 0,
      "--udml.mining_margin must be >= 0 (0.1 in the seed), got {}",
      config.mining_margin);
}

void validate(const ContrastiveConfig& config) {
  UEL_CHECK_CONFIG(
      config.margin >= -1 && config.margin < 1,
      "--udml.contrastive_margin is a cosine similarity: it must lie in [-1, 1), got {}",
      config.margin);
}

PairLoss multi_similarity_loss(
    const at::Tensor& embeddings,
    const at::Tensor& labels,
    comm::Communicator& comm,
    const MultiSimilarityConfig& config) {
  validate(config);
  const Pairs pairs = global_pairs(embeddings, labels, comm, "multi_similarity_loss");
  // Mining selects pairs by thresholds from the unmined sets; like the seed's masked_select, the
  // selection carries no gradient. An empty set gives +-inf thresholds, which keep nothing.
  const at::Tensor s = pairs.sim.detach();
  const at::Tensor min_pos = s.masked_fill(pairs.positive.logical_not(), kInf).amin(1, true);
  const at::Tensor max_neg = s.masked_fill(pairs.negative.logical_not(), -kInf).amax(1, true);
  const at::Tensor pos = pairs.positive & (s - config.mining_margin < max_neg);
  const at::Tensor neg = pairs.negative & (s + config.mining_margin > min_pos);
  const at::Tensor kept = pos.any(1) & neg.any(1);

  const at::Tensor pos_term =
      log1p_sum_exp(-config.pos_scale * (pairs.sim - config.lambda), pos) / config.pos_scale;
  const at::Tensor neg_term =
      log1p_sum_exp(config.neg_scale * (pairs.sim - config.lambda), neg) / config.neg_scale;
  // Masked, not indexed: every rank keeps its graph to the keys, so every rank's backward
  // issues the reduce-scatter even when all its anchors are skipped.
  const at::Tensor per_anchor = (pos_term + neg_term).masked_fill(kept.logical_not(), 0);
  return finish(per_anchor, kept.logical_not(), pairs, comm);
}

PairLoss contrastive_loss(
    const at::Tensor& embeddings,
    const at::Tensor& labels,
    comm::Communicator& comm,
    const ContrastiveConfig& config) {
  validate(config);
  const Pairs pairs = global_pairs(embeddings, labels, comm, "contrastive_loss");
  const at::Tensor pos = pairs.positive.to(pairs.sim.scalar_type());
  const at::Tensor neg = pairs.negative.to(pairs.sim.scalar_type());
  // clamp_min(1): an empty mean is 0 rather than 0/0.
  const at::Tensor pull = ((1 - pairs.sim) * pos).sum(1) / pos.sum(1).clamp_min(1);
  const at::Tensor push =
      (at::relu(pairs.sim - config.margin) * neg).sum(1) / neg.sum(1).clamp_min(1);
  return finish(pull + push, pairs.positive.any(1).logical_not(), pairs, comm);
}

}  // namespace uel::losses
