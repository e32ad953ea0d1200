// The pair losses against plain loops over pairs (and numbers from numpy) on a hand-built batch,
// their gradients against finite differences, world-size invariance (1, 2, 4 ranks), float32
// stability at large scales, skipped anchors, option checks and CUDA tensors.

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/losses/pair_loss.h"

namespace uel::losses {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::unique_ptr<comm::Communicator> cpu_comm() {
  return comm::make_communicator("auto", c10::Device(c10::kCPU));
}

struct Batch {
  at::Tensor x;       // [B, D] float64, the same on every rank
  at::Tensor labels;  // [B] int64
};

// Unit vectors in the plane at the given angles (degrees).
Batch on_circle(const std::vector<double>& degrees, const std::vector<int64_t>& labels) {
  at::Tensor x = torch::zeros({static_cast<int64_t>(degrees.size()), 2}, torch::kDouble);
  for (size_t i = 0; i < degrees.size(); ++i) {
    x[i][0] = std::cos(degrees[i] * kPi / 180);
    x[i][1] = std::sin(degrees[i] * kPi / 180);
  }
  return {x, torch::tensor(labels, torch::kLong)};
}

// Default config: anchors 0 and 1 (a tight pair far from the rest) are skipped by mining, 7 has
// no positive, anchors 2-6 keep some pairs and lose others; no S lies within 0.02 of a mining
// threshold (nor within 0.04 of the contrastive margin 0.3).
Batch hand_built() {
  return on_circle({0, 10, 60, 100, 150, 120, 200, 270}, {0, 0, 1, 1, 1, 2, 2, 3});
}

// 16 random unit vectors in 5-D, 5 classes of 3 or 4.
Batch random_batch() {
  torch::manual_seed(7);
  at::Tensor x = torch::nn::functional::normalize(
      torch::randn({16, 5}, torch::kDouble), torch::nn::functional::NormalizeFuncOptions().dim(1));
  return {x, torch::remainder(torch::arange(16, torch::kLong), 5)};
}

double dot(const at::Tensor& x, int64_t i, int64_t j) {
  return x[i].dot(x[j]).item<double>();
}

struct Reference {
  double loss = 0;
  int skipped = 0;
  int dropped = 0;  // pairs mining removed from anchors it did not skip
  double mean_pos = 0;
  double mean_neg = 0;
};

// The seed's WeightLoss as plainly as possible, self excluded by index.
Reference ms_reference(const Batch& batch, const MultiSimilarityConfig& c) {
  const int64_t n = batch.x.size(0);
  const auto label = [&](int64_t i) { return batch.labels[i].item<int64_t>(); };
  Reference r;
  int pos_pairs = 0, neg_pairs = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> pos, neg;
    for (int64_t j = 0; j < n; ++j) {
      if (j != i)
        (label(j) == label(i) ? pos : neg).push_back(dot(batch.x, i, j));
    }
    for (double s : pos)
      r.mean_pos += s, ++pos_pairs;
    for (double s : neg)
      r.mean_neg += s, ++neg_pairs;
    if (pos.empty() || neg.empty()) {
      ++r.skipped;
      continue;
    }
    const double min_pos = *std::min_element(pos.begin(), pos.end());
    const double max_neg = *std::max_element(neg.begin(), neg.end());
    double pos_sum = 0, neg_sum = 0;
    int kept_pos = 0, kept_neg = 0;
    for (double s : pos) {
      if (s - c.mining_margin < max_neg)
        pos_sum += std::exp(-c.pos_scale * (s - c.lambda)), ++kept_pos;
    }
    for (double s : neg) {
      if (s + c.mining_margin > min_pos)
        neg_sum += std::exp(c.neg_scale * (s - c.lambda)), ++kept_neg;
    }
    if (kept_pos == 0 || kept_neg == 0) {
      ++r.skipped;
      continue;
    }
    r.dropped += static_cast<int>(pos.size() + neg.size()) - kept_pos - kept_neg;
    r.loss += std::log(1 + pos_sum) / c.pos_scale + std::log(1 + neg_sum) / c.neg_scale;
  }
  r.loss /= n;
  r.mean_pos /= pos_pairs;
  r.mean_neg /= neg_pairs;
  return r;
}

double contrastive_reference(const Batch& batch, const ContrastiveConfig& c) {
  const int64_t n = batch.x.size(0);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    double pull = 0, push = 0;
    int pos = 0, neg = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double s = dot(batch.x, i, j);
      if (batch.labels[j].item<int64_t>() != batch.labels[i].item<int64_t>())
        push += std::max(s - c.margin, 0.0), ++neg;
      else if (j != i)
        pull += 1 - s, ++pos;
    }
    total += (pos > 0 ? pull / pos : 0) + (neg > 0 ? push / neg : 0);
  }
  return total / n;
}

using LossFn = std::function<PairLoss(const at::Tensor&, const at::Tensor&, comm::Communicator&)>;

struct Outcome {
  PairLoss result;  // this rank's
  double loss;      // averaged over ranks: the global-batch loss
  at::Tensor grad;  // of this rank's rows
};

// Rank r holds rows [r*b, (r+1)*b) of the global batch.
Outcome run_sliced(const LossFn& loss, const Batch& batch, comm::Communicator& comm) {
  const int64_t b = batch.x.size(0) / comm.size(), begin = comm.rank() * b;
  EXPECT_EQ(b * comm.size(), batch.x.size(0));
  at::Tensor mine = batch.x.slice(0, begin, begin + b).clone().requires_grad_(true);
  Outcome out{loss(mine, batch.labels.slice(0, begin, begin + b), comm), 0, {}};
  out.result.loss.backward();
  out.loss = comm.all_reduce_scalar(out.result.loss.item<double>(), comm::ReduceOp::kAvg);
  out.grad = mine.grad();
  return out;
}

LossFn ms(const MultiSimilarityConfig& config) {
  return [config](const at::Tensor& x, const at::Tensor& labels, comm::Communicator& comm) {
    return multi_similarity_loss(x, labels, comm, config);
  };
}

LossFn contrastive(const ContrastiveConfig& config) {
  return [config](const at::Tensor& x, const at::Tensor& labels, comm::Communicator& comm) {
    return contrastive_loss(x, labels, comm, config);
  };
}

TEST(MultiSimilarity, MatchesPairLoopsOnAHandBuiltBatch) {
  auto comm = cpu_comm();
  const Batch batch = hand_built();
  // The loss from numpy (float64) pins the reference itself.
  const std::vector<std::pair<MultiSimilarityConfig, double>> cases = {
      {MultiSimilarityConfig{}, 0.5543241780616556}, {{1, 10, 0.3, 0.2}, 0.9007348640714331}};
  for (const auto& [config, numpy_loss] : cases) {
    const Reference ref = ms_reference(batch, config);
    EXPECT_NEAR(ref.loss, numpy_loss, 1e-14);
    // The batch exercises what it is built for: mining drops pairs and skips anchors.
    EXPECT_EQ(ref.skipped, 3);
    EXPECT_GT(ref.dropped, 0);
    const Outcome out = run_sliced(ms(config), batch, *comm);
    EXPECT_NEAR(out.loss, ref.loss, 1e-12) << "neg_scale " << config.neg_scale;
    EXPECT_DOUBLE_EQ(out.result.skipped_fraction, ref.skipped / 8.0);
    EXPECT_NEAR(out.result.mean_pos, ref.mean_pos, 1e-12);
    EXPECT_NEAR(out.result.mean_neg, ref.mean_neg, 1e-12);
    EXPECT_NEAR(out.result.mean_pos, 0.513457596696931, 1e-12);
    EXPECT_NEAR(out.result.mean_neg, -0.19430976145473747, 1e-12);
  }
}

TEST(MultiSimilarity, SameLossAndGradientOnAnyWorldSize) {
  auto comm = cpu_comm();
  comm::LocalCommunicator local;
  const int n = comm->size();
  for (const Batch& batch : {hand_built(), random_batch()}) {
    for (const MultiSimilarityConfig& config :
         {MultiSimilarityConfig{}, MultiSimilarityConfig{1, 10, 0.3, 0.2}}) {
      const Outcome whole = run_sliced(ms(config), batch, local);
      const Outcome split = run_sliced(ms(config), batch, *comm);
      EXPECT_NEAR(split.loss, whole.loss, 1e-12 * std::abs(whole.loss));
      // Each rank's loss is 1/n of the global loss's sum over ranks: its gradient is n times its
      // rows' share of the global gradient (through its anchors and everyone's keys).
      const int64_t b = batch.x.size(0) / n;
      const at::Tensor reference = whole.grad.slice(0, comm->rank() * b, (comm->rank() + 1) * b);
      EXPECT_TRUE(torch::allclose(split.grad / n, reference, 1e-10, 1e-12))
          << (split.grad / n - reference).abs().max().item<double>();
      EXPECT_GT(reference.abs().max().item<double>(), 1e-3);  // keys carry gradient
      EXPECT_DOUBLE_EQ(split.result.skipped_fraction, whole.result.skipped_fraction);
      EXPECT_NEAR(split.result.mean_pos, whole.result.mean_pos, 1e-12);
      EXPECT_NEAR(split.result.mean_neg, whole.result.mean_neg, 1e-12);
    }
  }
}

// Central differences of the loss of one process, each row both an anchor and a key.
at::Tensor numeric_gradient(const LossFn& loss, const Batch& batch) {
  comm::LocalCommunicator local;
  at::Tensor numeric = torch::zeros_like(batch.x);
  const double h = 1e-6;
  for (int64_t k = 0; k < batch.x.numel(); ++k) {
    at::Tensor plus = batch.x.clone(), minus = batch.x.clone();
    plus.view(-1)[k] += h;
    minus.view(-1)[k] -= h;
    numeric.view(-1)[k] = (loss(plus, batch.labels, local).loss.item<double>() -
                           loss(minus, batch.labels, local).loss.item<double>()) /
                          (2 * h);
  }
  return numeric;
}

TEST(MultiSimilarity, GradientMatchesFiniteDifferences) {
  comm::LocalCommunicator local;
  // Mining is piecewise constant: the hand-built batch keeps every S 0.02 from a threshold.
  for (const MultiSimilarityConfig& config :
       {MultiSimilarityConfig{}, MultiSimilarityConfig{1, 10, 0.3, 0.2}}) {
    const Batch batch = hand_built();
    const at::Tensor grad = run_sliced(ms(config), batch, local).grad;
    const at::Tensor numeric = numeric_gradient(ms(config), batch);
    EXPECT_TRUE(torch::allclose(grad, numeric, 1e-6, 1e-8))
        << (grad - numeric).abs().max().item<double>();
  }
}

TEST(MultiSimilarity, StableForLargeScalesInFloat32) {
  comm::LocalCommunicator local;
  // Eight directions around e0 at radius 0.1: every S lies in [0.98, 1), pairs of neighbours
  // share a label, and mining keeps every pair (all S within the 0.1 margin of each other).
  at::Tensor x = torch::zeros({8, 3}, torch::kDouble);
  for (int i = 0; i < 8; ++i) {
    x[i][0] = 1;
    x[i][1] = 0.1 * std::cos(i * kPi / 4);
    x[i][2] = 0.1 * std::sin(i * kPi / 4);
  }
  x = torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
  const at::Tensor labels = torch::tensor({0, 0, 1, 1, 2, 2, 3, 3}, torch::kLong);
  // neg_scale 400: exp(400 (S - 0.5)) ~ e^196 overflows float32 (and the seed's direct form).
  for (double neg_scale : {40.0, 400.0}) {
    const MultiSimilarityConfig config{2, neg_scale, 0.5, 0.1};
    const Outcome wide = run_sliced(ms(config), {x, labels}, local);
    const Outcome narrow = run_sliced(ms(config), {x.to(torch::kFloat), labels}, local);
    EXPECT_EQ(wide.result.skipped_fraction, 0);
    EXPECT_TRUE(std::isfinite(narrow.loss)) << "neg_scale " << neg_scale;
    EXPECT_TRUE(torch::isfinite(narrow.grad).all().item<bool>()) << "neg_scale " << neg_scale;
    EXPECT_NEAR(narrow.loss, wide.loss, 1e-5 * wide.loss) << "neg_scale " << neg_scale;
    const double scale = wide.grad.abs().max().item<double>();
    EXPECT_LT((narrow.grad.to(torch::kDouble) - wide.grad).abs().max().item<double>(), 1e-3 * scale)
        << "neg_scale " << neg_scale;
  }
  // Reduced precision is computed in float32.
  const Outcome half = run_sliced(ms({}), {x.to(torch::kBFloat16), labels}, local);
  EXPECT_TRUE(std::isfinite(half.loss));
  EXPECT_TRUE(torch::isfinite(half.grad).all().item<bool>());
}

void expect_zero_loss_and_gradient(const Outcome& out) {
  EXPECT_EQ(out.loss, 0);
  EXPECT_EQ(out.result.skipped_fraction, 1);
  EXPECT_TRUE(out.grad.defined());
  EXPECT_TRUE(torch::equal(out.grad, torch::zeros_like(out.grad))) << out.grad;
}

TEST(MultiSimilarity, SkippedAnchorsGiveZeroLossAndGradient) {
  auto comm = cpu_comm();
  // Every positive closer than any negative by more than the margin: mining skips every anchor
  // (on every rank, which still joins the backward reduce-scatter).
  expect_zero_loss_and_gradient(run_sliced(ms({}), on_circle({0, 5, 90, 95}, {0, 0, 1, 1}), *comm));
  // No positives.
  const Outcome distinct = run_sliced(ms({}), on_circle({0, 5, 90, 95}, {0, 1, 2, 3}), *comm);
  expect_zero_loss_and_gradient(distinct);
  EXPECT_TRUE(std::isnan(distinct.result.mean_pos));
  // No negatives.
  expect_zero_loss_and_gradient(run_sliced(ms({}), on_circle({0, 5, 90, 95}, {4, 4, 4, 4}), *comm));
}

TEST(Contrastive, MatchesPairLoopsOnAHandBuiltBatch) {
  auto comm = cpu_comm();
  const Batch batch = hand_built();
  const ContrastiveConfig config{0.3};
  const double ref = contrastive_reference(batch, config);
  EXPECT_NEAR(ref, 0.5159253970984617, 1e-14);  // numpy
  const Outcome out = run_sliced(contrastive(config), batch, *comm);
  EXPECT_NEAR(out.loss, ref, 1e-12);
  EXPECT_DOUBLE_EQ(out.result.skipped_fraction, 1 / 8.0);  // anchor 7 has no positive
  EXPECT_NEAR(out.result.mean_pos, 0.513457596696931, 1e-12);
}

TEST(Contrastive, SameLossAndGradientOnAnyWorldSizeAndFiniteDifferences) {
  auto comm = cpu_comm();
  comm::LocalCommunicator local;
  const int n = comm->size();
  const ContrastiveConfig config{0.3};
  for (const Batch& batch : {hand_built(), random_batch()}) {
    const Outcome whole = run_sliced(contrastive(config), batch, local);
    const Outcome split = run_sliced(contrastive(config), batch, *comm);
    EXPECT_NEAR(split.loss, whole.loss, 1e-12 * std::abs(whole.loss));
    const int64_t b = batch.x.size(0) / n;
    const at::Tensor reference = whole.grad.slice(0, comm->rank() * b, (comm->rank() + 1) * b);
    EXPECT_TRUE(torch::allclose(split.grad / n, reference, 1e-10, 1e-12))
        << (split.grad / n - reference).abs().max().item<double>();
    // The hand-built batch keeps every S 0.04 from the margin (relu's kink).
    const at::Tensor numeric = numeric_gradient(contrastive(config), batch);
    EXPECT_TRUE(torch::allclose(whole.grad, numeric, 1e-6, 1e-8))
        << (whole.grad - numeric).abs().max().item<double>();
  }
}

TEST(PairLosses, RejectBadOptionsAndInputs) {
  comm::LocalCommunicator local;
  const Batch batch = hand_built();
  EXPECT_THROW_WITH(
      validate(MultiSimilarityConfig{0, 40, 0.5, 0.1}), ConfigError, "--udml.pos_scale");
  EXPECT_THROW_WITH(
      validate(MultiSimilarityConfig{2, -1, 0.5, 0.1}), ConfigError, "--udml.neg_scale");
  EXPECT_THROW_WITH(validate(MultiSimilarityConfig{2, 40, NAN, 0.1}), ConfigError, "--udml.lambda");
  EXPECT_THROW_WITH(
      validate(MultiSimilarityConfig{2, 40, 0.5, -0.1}), ConfigError, "--udml.mining_margin");
  EXPECT_THROW_WITH(validate(ContrastiveConfig{1.0}), ConfigError, "--udml.contrastive_margin");
  EXPECT_THROW_WITH(
      multi_similarity_loss(batch.x, batch.labels, local, {2, 40, 0.5, -0.1}),
      ConfigError,
      "--udml.mining_margin");
  EXPECT_THROW_WITH(
      multi_similarity_loss(batch.x, batch.labels.to(torch::kInt), local, {}),
      Error,
      "int64 labels");
  EXPECT_THROW_WITH(
      contrastive_loss(batch.x[0], batch.labels, local, {}), Error, "[b, D] embeddings");
}

TEST(PairLosses, MatchCpu_cuda) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no usable CUDA device";
  const c10::Device device = comm::select_device("cuda", /*share_gpus=*/true);
  auto gpu = comm::make_communicator(comm::world().size == 1 ? "local" : "mpi", device);
  auto cpu = cpu_comm();
  const Batch batch = random_batch();
  for (const LossFn& loss : {ms({}), contrastive({})}) {
    const Outcome on_cpu = run_sliced(loss, batch, *cpu);
    const Outcome on_gpu = run_sliced(loss, {batch.x.to(device), batch.labels.to(device)}, *gpu);
    EXPECT_TRUE(on_gpu.grad.is_cuda());
    EXPECT_NEAR(on_gpu.loss, on_cpu.loss, 1e-10);
    EXPECT_TRUE(torch::allclose(on_gpu.grad.cpu(), on_cpu.grad, 1e-9, 1e-12));
    EXPECT_EQ(on_gpu.result.skipped_fraction, on_cpu.result.skipped_fraction);
  }
}

}  // namespace
}  // namespace uel::losses
