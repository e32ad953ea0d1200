#include "uel/losses/margin.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "counter_uniform.h"
#include "uel/comm/autograd.h"
#include "uel/core/error.h"

namespace uel::losses {

namespace {

// Floor of 1 - d^2/4 in the log-weights: at d = 2 (antipodal points, or rounding) it is log(0).
constexpr double kSphereEps = 1e-8;
// Under the loss's square roots (the seed's): finite gradients where two rows coincide.
constexpr double kDistanceEps = 1e-8;

// The layout the triplets rely on, checked on host labels: blocks of k items of one class, and
// at least two classes, so every anchor has positives and some negative to draw.
void check_class_blocks(const at::Tensor& labels, int64_t k) {
  const int64_t batch = labels.size(0);
  UEL_CHECK(k >= 2, "the margin loss needs at least 2 items per class (positives), got {}", k);
  UEL_CHECK(
      batch > 0 && batch % k == 0,
      "the global batch of {} is not a multiple of {} items per class: set the batch size to "
      "classes per batch x items per class",
      batch,
      k);
  const at::Tensor blocks = labels.view({batch / k, k});
  const at::Tensor first = blocks.select(1, 0);
  UEL_CHECK(
      blocks.eq(first.unsqueeze(1)).all().item<bool>(),
      "the global batch is not class blocks of {} items: draw it with the class-balanced sampler",
      k);
  UEL_CHECK(
      first.ne(first[0]).any().item<bool>(),
      "the global batch holds one class only: negatives need at least two classes per batch");
}

// distance_weighted_negatives once the labels are checked; labels on global's device.
at::Tensor sample_negatives(
    const at::Tensor& global,
    const at::Tensor& labels,
    int64_t begin,
    int64_t end,
    int64_t k,
    uint64_t key,
    const MarginConfig& config) {
  // float64 whatever the training precision: a rank's rows of the distance matmul may round
  // differently from one process's, and a draw flips only if its uniform falls in that gap.
  const at::Tensor x = global.detach().to(at::kDouble);
  const int64_t batch = x.size(0);
  const double n = static_cast<double>(x.size(1));
  const at::Tensor cosine = x.slice(0, begin, end).matmul(x.t());
  const at::Tensor d = (2 - 2 * cosine).clamp_min(0).sqrt().clamp_min(config.cutoff);
  const at::Tensor other_class = labels.slice(0, begin, end).unsqueeze(1).ne(labels.unsqueeze(0));
  const at::Tensor admissible = other_class.logical_and(d.lt(config.nonzero_loss_cutoff));
  const at::Tensor log_w =
      ((2 - n) * d.log() - (n - 3) / 2 * (1 - d.square() / 4).clamp_min(kSphereEps).log())
          .masked_fill(admissible.logical_not(), -std::numeric_limits<double>::infinity());
  // The row's own maximum (the seed's global one underflows whole rows to 0); a row with no
  // admissible item has max -inf and takes the uniform fallback instead.
  const at::Tensor empty = admissible.any(1, /*keepdim=*/true).logical_not();
  const at::Tensor row_max = std::get<0>(log_w.max(1, /*keepdim=*/true)).masked_fill(empty, 0);
  const at::Tensor weights =
      at::where(empty, other_class.to(at::kDouble), at::exp(log_w - row_max));

  // Inverse CDF on the unnormalised cumulative weights: value = u * total is the normalised
  // draw, and u < 1 with round-to-nearest gives value < total, so the first cdf > value is an
  // item of positive weight.
  const at::Tensor cdf = weights.cumsum(1);
  const at::Tensor counters =
      at::arange(begin * (k - 1), end * (k - 1), labels.options()).view({end - begin, k - 1});
  const at::Tensor value = counter_uniform(counters, key) * cdf.slice(1, batch - 1, batch);
  return at::searchsorted(cdf, value, /*out_int32=*/false, /*right=*/true);
}

}  // namespace

void validate(const MarginConfig& c) {
  UEL_CHECK_CONFIG(c.margin >= 0, "--margin.margin (alpha) must be >= 0, got {}", c.margin);
  UEL_CHECK_CONFIG(
      std::isfinite(c.beta_init) && c.beta_init > 0,
      "--margin.beta_init must be a positive distance, got {}",
      c.beta_init);
  UEL_CHECK_CONFIG(c.nu >= 0, "--margin.nu must be >= 0 (0 = no regulariser), got {}", c.nu);
  UEL_CHECK_CONFIG(
      c.cutoff > 0, "--margin.cutoff must be positive (the weights take log d), got {}", c.cutoff);
  UEL_CHECK_CONFIG(
      c.nonzero_loss_cutoff > c.cutoff,
      "--margin.nonzero_loss_cutoff {} must exceed --margin.cutoff {}, or no negative is ever "
      "admissible",
      c.nonzero_loss_cutoff,
      c.cutoff);
}

at::Tensor distance_weighted_negatives(
    const at::Tensor& global,
    const at::Tensor& labels,
    int64_t begin,
    int64_t end,
    int64_t items_per_class,
    uint64_t key,
    const MarginConfig& config) {
  UEL_CHECK(
      global.dim() == 2 && labels.dim() == 1 && labels.size(0) == global.size(0),
      "distance_weighted_negatives expects [B, D] rows and [B] labels, got {} and {}",
      c10::str(global.sizes()),
      c10::str(labels.sizes()));
  UEL_CHECK(
      0 <= begin && begin <= end && end <= global.size(0),
      "anchors [{}, {}) outside the global batch of {}",
      begin,
      end,
      global.size(0));
  const at::Tensor ids = labels.to(at::kLong);
  check_class_blocks(ids.cpu(), items_per_class);
  return sample_negatives(
      global, ids.to(global.device()), begin, end, items_per_class, key, config);
}

MarginLoss margin_loss(
    const at::Tensor& embeddings,
    const at::Tensor& labels,
    const at::Tensor& beta,
    uint64_t key,
    int64_t items_per_class,
    comm::Communicator& comm,
    const MarginConfig& config) {
  validate(config);
  UEL_CHECK(
      embeddings.dim() == 2 && labels.dim() == 1 && labels.size(0) == embeddings.size(0),
      "margin_loss expects [b, D] embeddings and [b] labels, got {} and {}",
      c10::str(embeddings.sizes()),
      c10::str(labels.sizes()));
  UEL_CHECK(
      config.per_class_beta ? beta.dim() == 1 : beta.numel() == 1,
      "beta must be {}, got {}",
      config.per_class_beta ? "[num_classes] (per_class_beta)" : "one number",
      c10::str(beta.sizes()));
  const int64_t b = embeddings.size(0), k = items_per_class;
  const at::Tensor gathered = comm::all_gather_with_grad(embeddings, comm);
  const at::Tensor all_labels = comm.all_gather(labels.to(embeddings.device(), at::kLong));
  const int64_t batch = gathered.size(0), begin = comm.rank() * b;
  UEL_CHECK(batch == b * comm.size(), "ranks disagree on the local batch size");
  // Checked where the gathered labels are host memory. On a GPU reading them back would stall
  // every step; there the class-balanced sampler, which draws every batch of this loss, is what
  // guarantees the layout (test_sampler).
  if (all_labels.is_cpu()) {
    check_class_blocks(all_labels, k);
    if (config.per_class_beta) {
      UEL_CHECK(
          all_labels.min().item<int64_t>() >= 0 && all_labels.max().item<int64_t>() < beta.size(0),
          "labels reach {} but beta has {} classes: size beta to the number of classes",
          all_labels.max().item<int64_t>(),
          beta.size(0));
    }
  }

  MarginLoss out;
  out.negatives = sample_negatives(gathered, all_labels, begin, begin + b, k, key, config);
  // Reduced precision is widened: the hinges compare distances that differ in the 3rd digit.
  const bool narrow =
      embeddings.scalar_type() == at::kHalf || embeddings.scalar_type() == at::kBFloat16;
  const at::Tensor x = narrow ? gathered.to(at::kFloat) : gathered;

  // Triplet (a, p_j, n_j), j < k - 1: p_j is the j-th other member of a's class block.
  const auto index = all_labels.options();
  const at::Tensor anchors = at::arange(begin, begin + b, index).unsqueeze(1);
  const at::Tensor j = at::arange(k - 1, index);
  const at::Tensor slot = at::remainder(anchors, k);
  const at::Tensor positives = anchors - slot + j + j.ge(slot).to(at::kLong);
  const int64_t triplets = b * (k - 1);
  const at::Tensor anchor = anchors.expand({b, k - 1}).reshape(-1);
  const at::Tensor a = x.index_select(0, anchor);
  const auto distance = [&](const at::Tensor& other) {
    return ((a - x.index_select(0, other.reshape(-1))).square().sum(1) + kDistanceEps).sqrt();
  };
  const at::Tensor d_ap = distance(positives), d_an = distance(out.negatives);
  const at::Tensor beta_t =
      (config.per_class_beta ? beta.index_select(0, all_labels.index_select(0, anchor))
                             : beta.reshape({}).expand({triplets}))
          .to(x.scalar_type());
  const at::Tensor pos = at::relu(d_ap - beta_t + config.margin);
  const at::Tensor neg = at::relu(beta_t - d_an + config.margin);

  // The normaliser counts the global batch's non-zero terms: one all-reduce of one number.
  at::Tensor count = (pos.gt(0).sum() + neg.gt(0).sum()).to(at::kDouble).reshape({1});
  comm.all_reduce(count, comm::ReduceOp::kSum);
  // Times the world size, so the ranks' mean is the global loss. No active term on any rank
  // (the count is the same everywhere): a loss of 0 with zero gradients.
  const at::Tensor scale =
      at::where(count.gt(0), static_cast<double>(comm.size()) / count, at::zeros_like(count));
  const at::Tensor total = pos.sum() + neg.sum() + config.nu * beta_t.sum();
  out.loss = (total * scale.to(x.scalar_type())).reshape({});
  out.active_fraction = (count / static_cast<double>(2 * batch * (k - 1))).reshape({});
  return out;
}

}  // namespace uel::losses
