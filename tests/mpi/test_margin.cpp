// The margin loss with distance-weighted sampling: the sampler against weights computed here
// term by term (frequencies, masks, the per-row maximum, the uniform fallback) and world-size
// invariant; the loss against a closed form, finite differences and one process holding the
// whole batch, on 1, 2 and 4 ranks.

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/core/rng.h"
#include "uel/losses/margin.h"

namespace uel::losses {
namespace {

struct Batch {
  at::Tensor x;       // [m k, D] unit rows, class blocks of k
  at::Tensor labels;  // block c has label m - 1 - c: labels are not block numbers
};

// Rows scattered around one random centre per class; the same on every rank.
Batch clustered_batch(int64_t m, int64_t k, int64_t dim, double spread, uint64_t seed) {
  torch::manual_seed(seed);
  const at::Tensor centres = torch::randn({m, 1, dim}, torch::kDouble);
  at::Tensor x = (centres + spread * torch::randn({m, k, dim}, torch::kDouble)).reshape({-1, dim});
  x = x / x.norm(2, 1, /*keepdim=*/true);
  const at::Tensor labels =
      torch::arange(m - 1, -1, -1, torch::kLong).unsqueeze(1).expand({m, k}).reshape(-1);
  return {x, labels};
}

uint64_t step_key(int64_t step) {
  return stream_key(9, RngPurpose::kMarginNegatives, 0, step);
}

double chord(const at::Tensor& x, int64_t i, int64_t j) {
  return std::sqrt(std::max(0.0, 2 - 2 * x[i].dot(x[j]).item<double>()));
}

// The sampling distribution written out: w_ij = 1/q(max(d, cutoff)) for other-class items
// closer than nonzero_loss_cutoff, uniform over other classes where a row has none; rows sum to 1.
// Relative to the row's largest weight, in logs: 1/q overflows double at D = 2048.
at::Tensor reference_weights(const Batch& batch, const MarginConfig& c) {
  const int64_t b = batch.x.size(0);
  const double n = static_cast<double>(batch.x.size(1));
  at::Tensor w = torch::zeros({b, b}, torch::kDouble);
  for (int64_t i = 0; i < b; ++i) {
    std::vector<double> log_w(b, -INFINITY);
    for (int64_t j = 0; j < b; ++j) {
      const double d = chord(batch.x, i, j);
      if (batch.labels[i].item<int64_t>() != batch.labels[j].item<int64_t>() &&
          d < c.nonzero_loss_cutoff) {
        const double dc = std::max(d, c.cutoff);
        log_w[j] = (2 - n) * std::log(dc) - (n - 3) / 2 * std::log(1 - dc * dc / 4);
      }
    }
    const double top = *std::max_element(log_w.begin(), log_w.end());
    for (int64_t j = 0; j < b; ++j)
      w[i][j] = std::isinf(top)
                    ? static_cast<double>(
                          batch.labels[i].item<int64_t>() != batch.labels[j].item<int64_t>())
                    : std::exp(log_w[j] - top);
    w[i] /= w[i].sum();
  }
  return w;
}

// counts[i][j]: how often anchor i drew item j over `keys` steps.
at::Tensor draw_counts(const Batch& batch, int64_t k, int64_t keys, const MarginConfig& config) {
  const int64_t b = batch.x.size(0);
  at::Tensor counts = torch::zeros({b, b}, torch::kDouble);
  for (int64_t step = 0; step < keys; ++step) {
    const at::Tensor negatives =
        distance_weighted_negatives(batch.x, batch.labels, 0, b, k, step_key(step), config);
    counts.scatter_add_(1, negatives, torch::ones(negatives.sizes(), torch::kDouble));
  }
  return counts;
}

// Every frequency within 5 standard deviations of its probability; zero weights never drawn.
void expect_frequencies(const at::Tensor& counts, const at::Tensor& p, int64_t draws) {
  for (int64_t i = 0; i < p.size(0); ++i) {
    for (int64_t j = 0; j < p.size(1); ++j) {
      const double pij = p[i][j].item<double>(), f = counts[i][j].item<double>() / draws;
      if (pij == 0) {
        EXPECT_EQ(f, 0) << "anchor " << i << " drew " << j << ", which has no weight";
      } else {
        EXPECT_LE(std::abs(f - pij), 5 * std::sqrt(pij * (1 - pij) / draws))
            << "anchor " << i << ", item " << j << ": frequency " << f << " for p = " << pij;
      }
    }
  }
}

TEST(MarginSampler, SameDrawsOnAnyWorldSize) {
  auto comm = comm::make_communicator("auto", c10::Device(c10::kCPU));
  const int n = comm->size(), r = comm->rank();
  // k = 4 and b = 24 / n: at 4 ranks class blocks straddle ranks.
  const int64_t m = 6, k = 4, global = m * k, b = global / n;
  const Batch batch = clustered_batch(m, k, 8, 0.8, 3);
  const at::Tensor beta = torch::full({}, 1.2, torch::kDouble);
  for (int64_t step : {0, 1, 7}) {
    const at::Tensor expected = distance_weighted_negatives(
        batch.x, batch.labels, 0, global, k, step_key(step), MarginConfig{});
    ASSERT_EQ(expected.sizes(), (at::IntArrayRef{global, k - 1}));
    const MarginLoss out = margin_loss(
        batch.x.slice(0, r * b, (r + 1) * b),
        batch.labels.slice(0, r * b, (r + 1) * b),
        beta,
        step_key(step),
        k,
        *comm,
        MarginConfig{});
    EXPECT_TRUE(torch::equal(comm->all_gather(out.negatives), expected)) << "step " << step;
    EXPECT_TRUE(torch::equal(
        distance_weighted_negatives(
            batch.x, batch.labels, r * b, (r + 1) * b, k, step_key(step), MarginConfig{}),
        expected.slice(0, r * b, (r + 1) * b)));
  }
  // Another step draws otherwise.
  EXPECT_FALSE(torch::equal(
      distance_weighted_negatives(batch.x, batch.labels, 0, global, k, step_key(0), {}),
      distance_weighted_negatives(batch.x, batch.labels, 0, global, k, step_key(1), {})));
}

TEST(MarginSampler, FrequenciesFollowTheInverseDensity) {
  const int64_t m = 4, k = 4, keys = 3000;
  const Batch batch = clustered_batch(m, k, 8, 1.0, 5);
  const MarginConfig config;
  const at::Tensor p = reference_weights(batch, config);
  // The case must mix admissible and cut-off items, with rows of several candidates.
  const at::Tensor support = p.gt(0).sum(1);
  ASSERT_TRUE(support.max().item<int64_t>() >= 4 && support.lt(12).all().item<bool>()) << support;
  expect_frequencies(draw_counts(batch, k, keys, config), p, keys * (k - 1));
}

// Five classes of three identical rows on orthogonal directions of R^2048: class 0 at e0, class
// 1 at distance 0.5 from it, class 2 at e2, class 3 at distance 1.3 from it, class 4 at -e0
// (antipodal to class 0). Other pairs are sqrt(2) > 1.4 apart, so class 4 has no admissible
// negative. log w spans ~1500 between the rows of classes 0 and 2: the seed's global maximum
// underflows the rows of classes 2 and 3 to zero, which then fall back to far items.
Batch sphere_layout() {
  const int64_t dim = 2048, k = 3;
  const auto point = [&](int64_t axis, int64_t toward, double distance) {
    const double angle = 2 * std::asin(distance / 2);
    at::Tensor v = torch::zeros({dim}, torch::kDouble);
    v[axis] = std::cos(angle);
    v[toward] = std::sin(angle);
    return v;
  };
  const std::vector<at::Tensor> classes = {
      point(0, 1, 0), point(0, 1, 0.5), point(2, 3, 0), point(2, 3, 1.3), point(0, 1, 2)};
  std::vector<at::Tensor> rows;
  for (const at::Tensor& c : classes) {
    for (int64_t i = 0; i < k; ++i)
      rows.push_back(c);
  }
  const at::Tensor labels =
      torch::arange(4, -1, -1, torch::kLong).unsqueeze(1).expand({5, k}).reshape(-1);
  return {torch::stack(rows), labels};
}

TEST(MarginSampler, NeverDrawsSameClassOrCutOffItemsAndFallsBackUniformly) {
  const int64_t k = 3, keys = 2000;
  const Batch batch = sphere_layout();
  const MarginConfig config;
  const at::Tensor counts = draw_counts(batch, k, keys, config);
  for (int64_t i = 0; i < 15; ++i) {
    for (int64_t j = 0; j < 15; ++j) {
      const bool same = batch.labels[i].item<int64_t>() == batch.labels[j].item<int64_t>();
      const bool cut_off = chord(batch.x, i, j) >= config.nonzero_loss_cutoff;
      if (same || (i < 12 && cut_off)) {
        EXPECT_EQ(counts[i][j].item<double>(), 0) << "anchor " << i << " drew " << j;
      }
    }
  }
  // Rows of class 0 draw class 1 only, and so on; class 4's row is uniform over the 12 others.
  const at::Tensor p = reference_weights(batch, config);
  EXPECT_TRUE(torch::allclose(
      p.slice(0, 12).slice(1, 0, 12), torch::full({3, 12}, 1.0 / 12, torch::kDouble)));
  expect_frequencies(counts, p, keys * (k - 1));
}

// Distances between uniform points of S^(n-1) have density q(d) ∝ d^(n-2) (1 - d^2/4)^((n-3)/2);
// drawing with weight 1/q(max(d, cutoff)) should leave drawn distances with density ∝ 1 on
// [cutoff, nonzero_loss_cutoff) and q(d)/q(cutoff) below the cutoff (the paper's claim, and why
// the sampler exists). A Pearson chi-square test of the drawn-distance histogram against that
// density, integrated here by Simpson's rule; n = 3 makes the second factor vanish, n = 5 not.
// Classes of 11 random points: each anchor draws 10 negatives, 19,800 draws per n. (Removing the
// cutoff clip, or a wrong exponent in q, gives chi-square > 150 against a critical ~55.)
TEST(MarginSampler, DrawnDistancesOfUniformSpherePointsFollowTheReweightedDensity) {
  const int64_t points = 1980, k = 11, keys = 1;
  const MarginConfig config;
  for (const int64_t n : {3, 5}) {
    torch::manual_seed(17 + n);
    at::Tensor x = torch::randn({points, n}, torch::kDouble);
    x = x / x.norm(2, 1, /*keepdim=*/true);
    const at::Tensor labels = torch::arange(points, torch::kLong).div(k, "floor");
    const auto q = [&](double d) {
      return std::pow(d, n - 2.0) * std::pow(1 - d * d / 4, (n - 3.0) / 2);
    };
    const auto density = [&](double d) {
      return d < config.cutoff ? q(d) / q(config.cutoff) : 1.0;
    };
    // Bins of 0.05 on [0, nonzero_loss_cutoff), merged from the left until each expects >= 5.
    const double width = 0.05;
    const int64_t fine = static_cast<int64_t>(std::lround(config.nonzero_loss_cutoff / width));
    std::vector<double> mass(fine);
    for (int64_t b = 0; b < fine; ++b) {
      const int steps = 64;
      const double h = width / steps, lo = b * width;
      double s = density(lo) + density(lo + width);
      for (int i = 1; i < steps; ++i)
        s += (i % 2 ? 4 : 2) * density(lo + i * h);
      mass[b] = s * h / 3;
    }
    const double total_mass = std::accumulate(mass.begin(), mass.end(), 0.0);
    const at::Tensor gram = x.mm(x.t());
    std::vector<double> observed(fine, 0);
    int64_t draws = 0;
    for (int64_t step = 0; step < keys; ++step) {
      const at::Tensor negatives =
          distance_weighted_negatives(x, labels, 0, points, k, step_key(step), config);
      const at::Tensor d =
          (2 - 2 * gram.gather(1, negatives)).clamp_min(0).sqrt().reshape(-1).contiguous();
      for (const double v :
           std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel())) {
        ASSERT_LT(v, config.nonzero_loss_cutoff);
        observed[static_cast<size_t>(v / width)] += 1;
        ++draws;
      }
    }
    double chi2 = 0, expected = 0, seen = 0;
    int64_t bins = 0;
    for (int64_t b = 0; b < fine; ++b) {
      expected += draws * mass[b] / total_mass;
      seen += observed[b];
      if (expected >= 5 || b == fine - 1) {
        chi2 += (seen - expected) * (seen - expected) / expected;
        ++bins;
        expected = seen = 0;
      }
    }
    // Wilson-Hilferty quantile of chi-square at p = 0.999 with bins - 1 degrees of freedom.
    const double dof = static_cast<double>(bins - 1), z = 3.09;
    const double critical = dof * std::pow(1 - 2 / (9 * dof) + z * std::sqrt(2 / (9 * dof)), 3);
    EXPECT_GT(bins, 20) << "n = " << n;
    EXPECT_LT(chi2, critical) << "n = " << n << ": chi-square " << chi2 << " over " << bins
                              << " bins of " << draws << " draws";
  }
}

TEST(MarginSampler, RejectsBatchesThatAreNotClassBlocks) {
  const Batch batch = clustered_batch(3, 2, 4, 0.5, 1);
  EXPECT_THROW_WITH(
      distance_weighted_negatives(batch.x, batch.labels, 0, 6, 4, 0, {}), Error, "not a multiple");
  EXPECT_THROW_WITH(
      distance_weighted_negatives(batch.x, batch.labels, 0, 6, 3, 0, {}), Error, "class blocks");
  EXPECT_THROW_WITH(
      distance_weighted_negatives(batch.x, torch::zeros({6}, torch::kLong), 0, 6, 2, 0, {}),
      Error,
      "one class only");
  EXPECT_THROW_WITH(
      distance_weighted_negatives(batch.x, batch.labels, 0, 6, 1, 0, {}), Error, "at least 2");
  MarginConfig bad;
  bad.cutoff = 1.5;
  EXPECT_THROW_WITH(validate(bad), ConfigError, "--margin.nonzero_loss_cutoff");
  bad = MarginConfig{};
  bad.nu = -1;
  EXPECT_THROW_WITH(validate(bad), ConfigError, "--margin.nu");
  bad = MarginConfig{};
  bad.beta_init = 0;
  EXPECT_THROW_WITH(validate(bad), ConfigError, "--margin.beta_init");
  bad = MarginConfig{};
  bad.margin = -0.1;
  EXPECT_THROW_WITH(validate(bad), ConfigError, "--margin.margin");
}

// Two classes of three in R^4 with one admissible negative per anchor, so the triplets are fixed:
// class A (label 1) at e0, e1, e3; class B (label 0) at cos60 e_i + sin60 e2 for the same i.
// |A_i - A_j| = sqrt(2), |B_i - B_j| = sqrt(1/2), |A_i - B_i| = 1, |A_i - B_j| = sqrt(2) (cut
// off). Anchor 0 (A) has positives 1, 2 and draws 3, 3; anchor 3 (B) has 4, 5 and draws 0, 0.
Batch two_classes() {
  const double c = std::cos(M_PI / 3), s = std::sin(M_PI / 3);
  const at::Tensor x = torch::tensor(
                           {1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0,  //
                            c,   0.0, s,   0.0, 0.0, c,   s,   0.0, 0.0, 0.0, s,   c},
                           torch::kDouble)
                           .view({6, 4});
  return {x, torch::tensor({1, 1, 1, 0, 0, 0}, torch::kLong)};
}

TEST(MarginLoss, ClosedFormOnFixedTriplets) {
  comm::LocalCommunicator local;
  const Batch batch = two_classes();
  const auto dist = [](double d2) { return std::sqrt(d2 + 1e-8); };
  const double a_ap = dist(2), b_ap = dist(0.5), d_an = dist(1);
  MarginConfig config;
  config.nu = 0.1;
  {
    // beta 1.2: A's positives (sqrt(2) > 1.0) and every negative (1 < 1.4) are active, B's
    // positives (sqrt(1/2) < 1.0) are not: 6 + 12 of 24 terms.
    at::Tensor beta = torch::full({}, 1.2, torch::kDouble).requires_grad_(true);
    const MarginLoss out = margin_loss(batch.x, batch.labels, beta, step_key(0), 3, local, config);
    EXPECT_TRUE(torch::equal(
        out.negatives,
        torch::tensor({3, 3, 4, 4, 5, 5, 0, 0, 1, 1, 2, 2}, torch::kLong).view({6, 2})));
    const double expected = (6 * (a_ap - 1.0) + 12 * (1.4 - d_an) + 0.1 * 12 * 1.2) / 18;
    EXPECT_NEAR(out.loss.item<double>(), expected, 1e-14);
    EXPECT_DOUBLE_EQ(out.active_fraction.item<double>(), 18.0 / 24);
    out.loss.backward();
    EXPECT_NEAR(beta.grad().item<double>(), (-6 + 12 + 0.1 * 12) / 18, 1e-14);
  }
  {
    // Per class, indexed by the anchor's label: beta = {0.6 (B), 1.2 (A)}. B's positives become
    // active (sqrt(1/2) > 0.4) and B's negatives inactive (1 > 0.8): 6 + 6 + 6 of 24 terms.
    config.per_class_beta = true;
    at::Tensor beta = torch::tensor({0.6, 1.2}, torch::kDouble).requires_grad_(true);
    const MarginLoss out = margin_loss(batch.x, batch.labels, beta, step_key(0), 3, local, config);
    const double expected =
        (6 * (a_ap - 1.0) + 6 * (1.4 - d_an) + 6 * (b_ap - 0.4) + 0.1 * 6 * (1.2 + 0.6)) / 18;
    EXPECT_NEAR(out.loss.item<double>(), expected, 1e-14);
    out.loss.backward();
    const at::Tensor grad =
        torch::tensor({(-6 + 0.1 * 6) / 18, (-6 + 6 + 0.1 * 6) / 18.0}, torch::kDouble);
    EXPECT_TRUE(torch::allclose(beta.grad(), grad, 0, 1e-14)) << beta.grad();
    EXPECT_THROW_WITH(
        margin_loss(batch.x, batch.labels + 1, beta, 0, 3, local, config),
        Error,
        "size beta to the number of classes");
  }
}

struct Result {
  double loss = 0;
  double active = 0;
  at::Tensor x_grad;     // [B, D] (distributed: this rank's rows)
  at::Tensor beta_grad;  // averaged over ranks
};

Result run(
    const at::Tensor& x,
    const at::Tensor& labels,
    const at::Tensor& beta,
    int64_t k,
    int64_t step,
    comm::Communicator& comm,
    const MarginConfig& config) {
  at::Tensor leaf = x.clone().requires_grad_(true);
  at::Tensor beta_leaf = beta.clone().requires_grad_(true);
  const MarginLoss out = margin_loss(leaf, labels, beta_leaf, step_key(step), k, comm, config);
  out.loss.backward();
  Result result;
  result.loss = comm.all_reduce_scalar(out.loss.item<double>(), comm::ReduceOp::kAvg);
  result.active = out.active_fraction.item<double>();
  result.x_grad = leaf.grad();
  result.beta_grad = beta_leaf.grad();
  comm.all_reduce(result.beta_grad, comm::ReduceOp::kAvg);
  return result;
}

TEST(MarginLoss, SameLossAndGradientsOnAnyWorldSize) {
  auto comm = comm::make_communicator("auto", c10::Device(c10::kCPU));
  comm::LocalCommunicator local;
  const int n = comm->size(), r = comm->rank();
  const int64_t m = 6, k = 4, global = m * k, b = global / n;
  const Batch batch = clustered_batch(m, k, 8, 0.8, 13);
  for (bool per_class : {false, true}) {
    MarginConfig config;
    config.nu = 0.1;
    config.per_class_beta = per_class;
    const at::Tensor beta = per_class ? torch::linspace(0.9, 1.3, m, torch::kDouble)
                                      : torch::full({}, 1.1, torch::kDouble);
    for (int64_t step : {0, 5}) {
      const Result expected = run(batch.x, batch.labels, beta, k, step, local, config);
      ASSERT_GT(expected.active, 0.2);
      ASSERT_LT(expected.active, 0.9);
      const Result mine =
          run(batch.x.slice(0, r * b, (r + 1) * b),
              batch.labels.slice(0, r * b, (r + 1) * b),
              beta,
              k,
              step,
              *comm,
              config);
      EXPECT_NEAR(mine.loss, expected.loss, 1e-10) << "per_class " << per_class;
      EXPECT_DOUBLE_EQ(mine.active, expected.active);
      // Each rank's loss is N times its share: its gradient over N is the global one's rows.
      const at::Tensor reference = expected.x_grad.slice(0, r * b, (r + 1) * b);
      EXPECT_TRUE(torch::allclose(mine.x_grad / n, reference, 0, 1e-10))
          << (mine.x_grad / n - reference).abs().max().item<double>();
      EXPECT_TRUE(torch::allclose(mine.beta_grad, expected.beta_grad, 0, 1e-10))
          << mine.beta_grad << expected.beta_grad;
    }
  }
}

TEST(MarginLoss, GradientMatchesFiniteDifferences) {
  comm::LocalCommunicator local;
  const int64_t m = 3, k = 3;
  const Batch batch = clustered_batch(m, k, 5, 0.7, 17);
  for (bool per_class : {false, true}) {
    MarginConfig config;
    config.nu = 0.05;
    config.per_class_beta = per_class;
    const at::Tensor beta = per_class ? torch::tensor({0.8, 1.0, 1.2}, torch::kDouble)
                                      : torch::full({}, 1.0, torch::kDouble);
    const Result analytic = run(batch.x, batch.labels, beta, k, 3, local, config);
    ASSERT_GT(analytic.active, 0.2);
    ASSERT_LT(analytic.active, 0.9);
    const at::Tensor negatives =
        margin_loss(batch.x, batch.labels, beta, step_key(3), k, local, config).negatives;
    // Central differences where the loss is smooth: the same triplets and the same active terms
    // at both points (no draw flips, no hinge crosses its kink).
    const auto loss_at = [&](const at::Tensor& x, const at::Tensor& b) {
      const MarginLoss out = margin_loss(x, batch.labels, b, step_key(3), k, local, config);
      EXPECT_TRUE(torch::equal(out.negatives, negatives));
      EXPECT_EQ(out.active_fraction.item<double>(), analytic.active) << "at a kink";
      return out.loss.item<double>();
    };
    const double h = 1e-6;
    const auto moved = [&](const at::Tensor& t, int64_t i, double by) {
      at::Tensor copy = t.clone();
      copy.view(-1)[i] += by;
      return copy;
    };
    at::Tensor numeric_x = torch::zeros_like(batch.x);
    for (int64_t i = 0; i < batch.x.numel(); ++i) {
      numeric_x.view(-1)[i] =
          (loss_at(moved(batch.x, i, h), beta) - loss_at(moved(batch.x, i, -h), beta)) / (2 * h);
    }
    at::Tensor numeric_beta = torch::zeros_like(beta);
    for (int64_t i = 0; i < beta.numel(); ++i) {
      numeric_beta.view(-1)[i] =
          (loss_at(batch.x, moved(beta, i, h)) - loss_at(batch.x, moved(beta, i, -h))) / (2 * h);
    }
    EXPECT_TRUE(torch::allclose(analytic.x_grad, numeric_x, 1e-6, 1e-8))
        << (analytic.x_grad - numeric_x).abs().max().item<double>();
    EXPECT_TRUE(torch::allclose(analytic.beta_grad, numeric_beta, 1e-6, 1e-8))
        << analytic.beta_grad << numeric_beta;
  }
}

TEST(MarginLoss, NoActiveTermGivesZeroLossAndGradients) {
  auto comm = comm::make_communicator("auto", c10::Device(c10::kCPU));
  const int n = comm->size(), r = comm->rank();
  // Four classes of two at +-e0 and +-e1 (slightly jittered): positives within 0.01, every other
  // class about sqrt(2) or 2 away, so every row falls back and every negative lies beyond beta +
  // margin.
  const int64_t k = 2, global = 8, b = global / n;
  torch::manual_seed(2);
  at::Tensor x = torch::zeros({global, 4}, torch::kDouble);
  for (int64_t i = 0; i < global; ++i)
    x[i][(i / 2) % 2] = i < 4 ? 1 : -1;
  x = x + 0.002 * torch::rand({global, 4}, torch::kDouble).mul(2).sub(1);
  x = x / x.norm(2, 1, true);
  const at::Tensor labels = torch::tensor({0, 0, 1, 1, 2, 2, 3, 3}, torch::kLong);
  MarginConfig config;
  config.nu = 0.1;  // the regulariser alone would not be 0
  const Result out =
      run(x.slice(0, r * b, (r + 1) * b),
          labels.slice(0, r * b, (r + 1) * b),
          torch::full({}, 1.2, torch::kDouble),
          k,
          0,
          *comm,
          config);
  EXPECT_EQ(out.loss, 0);
  EXPECT_EQ(out.active, 0);
  EXPECT_TRUE(torch::isfinite(out.x_grad).all().item<bool>());
  EXPECT_EQ(out.x_grad.abs().max().item<double>(), 0);
  EXPECT_EQ(out.beta_grad.item<double>(), 0);
}

TEST(MarginLoss, Float32GivesTheFloat64Loss) {
  comm::LocalCommunicator local;
  const Batch batch = clustered_batch(4, 3, 16, 0.8, 23);
  const at::Tensor beta = torch::full({}, 1.2, torch::kDouble);
  const MarginLoss wide = margin_loss(batch.x, batch.labels, beta, step_key(1), 3, local, {});
  const MarginLoss narrow = margin_loss(
      batch.x.to(torch::kFloat), batch.labels, beta.to(torch::kFloat), step_key(1), 3, local, {});
  EXPECT_EQ(narrow.loss.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(narrow.negatives, wide.negatives));
  EXPECT_NEAR(narrow.loss.item<double>(), wide.loss.item<double>(), 1e-5);
}

}  // namespace
}  // namespace uel::losses
