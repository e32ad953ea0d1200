// The ISIF loss against a direct computation of the seed's formula on the global batch, its
// gradient against finite differences, and world-size invariance (1, 2, 4 ranks).

#include <torch/torch.h>

#include <cmath>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/losses/isif.h"

namespace uel::losses {
namespace {

// The seed's BatchCriterion, term by term, on the single-process layout [views1; views2].
at::Tensor direct_loss(const at::Tensor& all, double t, bool key_grad) {
  const int64_t m = all.size(0), b = m / 2;
  const at::Tensor keys = key_grad ? all : all.detach();
  at::Tensor total = torch::zeros({}, all.options());
  for (int64_t i = 0; i < m; ++i) {
    at::Tensor e = torch::exp(all[i].matmul(keys.t()) / t);
    at::Tensor d = e.sum() - e[i];
    const int64_t p = (i + b) % m;
    at::Tensor term = torch::log(e[p] / d);
    for (int64_t j = 0; j < m; ++j) {
      if (j != i && j != p)
        term = term + torch::log(1 - e[j] / d);
    }
    total = total - term;
  }
  return total / m;
}

// The loss as a function of the queries only, keys fixed (what detached keys differentiate).
double direct_loss_fixed_keys(const at::Tensor& queries, const at::Tensor& keys, double t) {
  const int64_t m = queries.size(0), b = m / 2;
  double total = 0;
  for (int64_t i = 0; i < m; ++i) {
    at::Tensor e = torch::exp(queries[i].matmul(keys.t()) / t);
    const double d = (e.sum() - e[i]).item<double>();
    const int64_t p = (i + b) % m;
    double term = std::log(e[p].item<double>() / d);
    for (int64_t j = 0; j < m; ++j) {
      if (j != i && j != p)
        term += std::log(1 - e[j].item<double>() / d);
    }
    total -= term;
  }
  return total / m;
}

// Global batch of `instances` pairs of L2-normalised views, built identically on every rank.
at::Tensor views(int64_t instances, int64_t dim, torch::ScalarType type) {
  torch::manual_seed(11);
  at::Tensor v = torch::randn({2, instances, dim}, torch::kDouble);
  // Second views near the first: positives are similar, as after augmentation.
  v[1] = v[0] + 0.5 * v[1];
  return torch::nn::functional::normalize(v, torch::nn::functional::NormalizeFuncOptions().dim(2))
      .to(type);
}

TEST(Isif, MatchesTheDirectFormulaOnAnyWorldSize) {
  auto comm = comm::make_communicator("auto", c10::Device(c10::kCPU));
  const int n = comm->size(), r = comm->rank();
  const int64_t global = 8, b = global / n, dim = 6;
  for (bool key_grad : {false, true}) {
    for (double t : {0.1, 0.05}) {
      at::Tensor v = views(global, dim, torch::kDouble);
      at::Tensor all = torch::cat({v[0], v[1]}).requires_grad_(true);
      at::Tensor expected = direct_loss(all, t, key_grad);
      expected.backward();

      at::Tensor mine =
          torch::cat({v[0].slice(0, r * b, (r + 1) * b), v[1].slice(0, r * b, (r + 1) * b)})
              .clone()
              .requires_grad_(true);
      IsifConfig config{t, key_grad};
      at::Tensor local = isif_loss(mine, *comm, config);
      local.backward();
      const double global_loss =
          comm->all_reduce_scalar(local.item<double>(), comm::ReduceOp::kAvg);
      EXPECT_NEAR(global_loss, expected.item<double>(), 1e-10 * std::abs(expected.item<double>()))
          << "T=" << t << " key_grad=" << key_grad;
      // The global loss is the mean of the ranks' losses: each rank's gradient is N times its
      // share of the global gradient (the query path, and with key_grad the key path as well).
      at::Tensor reference = torch::cat(
          {all.grad().slice(0, r * b, (r + 1) * b),
           all.grad().slice(0, global + r * b, global + (r + 1) * b)});
      EXPECT_TRUE(torch::allclose(mine.grad() / n, reference, 1e-9, 1e-12))
          << (mine.grad() / n - reference).abs().max().item<double>();
    }
  }
}

TEST(Isif, GradientMatchesFiniteDifferences) {
  comm::LocalCommunicator local;
  for (bool key_grad : {false, true}) {
    at::Tensor v = views(3, 4, torch::kDouble);
    at::Tensor x = torch::cat({v[0], v[1]}).requires_grad_(true);
    IsifConfig config{0.1, key_grad};
    isif_loss(x, local, config).backward();
    at::Tensor numeric = torch::zeros_like(x);
    const double h = 1e-6;
    for (int64_t k = 0; k < x.numel(); ++k) {
      at::Tensor plus = x.detach().clone(), minus = x.detach().clone();
      plus.view(-1)[k] += h;
      minus.view(-1)[k] -= h;
      // Finite differences see the keys move too; with detached keys only the query path counts,
      // so evaluate with the keys held fixed at x.
      auto loss_at = [&](const at::Tensor& q) {
        if (key_grad)
          return isif_loss(q, local, config).item<double>();
        return direct_loss_fixed_keys(q, x.detach(), config.temperature);
      };
      numeric.view(-1)[k] = (loss_at(plus) - loss_at(minus)) / (2 * h);
    }
    EXPECT_TRUE(torch::allclose(x.grad(), numeric, 1e-5, 1e-7))
        << (x.grad() - numeric).abs().max().item<double>();
  }
}

TEST(Isif, StableAtLowTemperatureAndInFloat32) {
  comm::LocalCommunicator local;
  // float32 against the direct formula in float64, down to T = 0.01 where exp(1/T) = e^100
  // overflows float32 (the seed's exp-then-divide gives inf/inf). Tolerances: logits of size 1/T
  // carry float32 rounding of about 1e-7/T each.
  for (const double t : {0.1, 0.05, 0.01}) {
    for (const bool key_grad : {false, true}) {
      at::Tensor v = views(6, 5, torch::kDouble);
      at::Tensor exact = torch::cat({v[0], v[1]}).requires_grad_(true);
      at::Tensor expected = direct_loss(exact, t, key_grad);
      expected.backward();
      at::Tensor x = exact.detach().to(torch::kFloat).requires_grad_(true);
      at::Tensor loss = isif_loss(x, local, IsifConfig{t, key_grad});
      loss.backward();
      ASSERT_EQ(loss.scalar_type(), torch::kFloat);
      EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-5 / t)
          << "T=" << t << " key_grad=" << key_grad;
      const double scale = exact.grad().abs().max().item<double>();
      const double worst = (x.grad().to(torch::kDouble) - exact.grad()).abs().max().item<double>();
      EXPECT_LE(worst, 1e-5 / t * scale) << "T=" << t << " key_grad=" << key_grad;
    }
  }
  // Far-apart negatives at T = 0.05: 1 - Q rounds to 1 in float32 for them, and Q of the
  // positive to 1; the loss is the float64 value, gradient included.
  at::Tensor far = torch::zeros({4, 4}, torch::kDouble);
  far[0][0] = 1, far[2][0] = 1, far[1][1] = 1, far[3][1] = 1;
  far.requires_grad_(true);
  at::Tensor expected = direct_loss(far, 0.05, false);
  expected.backward();
  at::Tensor x = far.detach().to(torch::kFloat).requires_grad_(true);
  at::Tensor loss = isif_loss(x, local, IsifConfig{0.05, false});
  loss.backward();
  EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-6);
  EXPECT_TRUE(torch::allclose(x.grad().to(torch::kDouble), far.grad(), 1e-5, 1e-6))
      << x.grad() << far.grad();
  EXPECT_THROW_WITH(isif_loss(torch::zeros({3, 4}), local, IsifConfig{}), Error, "expects [2b, D]");
}

}  // namespace
}  // namespace uel::losses
