// uel's BatchNorm computes what torch::nn::BatchNorm2d (BatchNorm1d for [N, C] rows) computes:
// with a communicator on the global batch of N ranks, without one on each rank's own rows.
// Outputs, input and parameter gradients, running statistics, eval mode; in float32, and in
// float64 where the only differences left are rounding.

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "uel/comm/world.h"
#include "uel/models/batch_norm.h"

namespace uel::models {
namespace {

using comm::Communicator;
using comm::ReduceOp;

template <typename Reference>
void check_against(
    const std::vector<int64_t>& shape,
    at::ScalarType dtype,
    double rtol,
    double atol,
    bool synchronised) {
  std::shared_ptr<Communicator> world = comm::make_communicator("auto", c10::Device(c10::kCPU));
  const int n = world->size(), r = world->rank();
  const int64_t global = shape[0], local = global / n;
  torch::manual_seed(7);  // the same data and upstream gradient on every rank
  const auto options = torch::TensorOptions().dtype(dtype);
  const at::Tensor x = torch::randn(shape, options) * 2 + 1;
  const at::Tensor g = torch::randn(shape, options);
  auto mine_of = [&](const at::Tensor& t) { return t.slice(0, r * local, (r + 1) * local); };
  // The reference sees the batch the module normalises over; `rows` picks this rank's outputs.
  const at::Tensor batch = synchronised ? x : mine_of(x);
  const at::Tensor batch_g = synchronised ? g : mine_of(g);
  auto rows = [&](const at::Tensor& t) { return synchronised ? mine_of(t) : t; };

  Reference reference(3);
  reference->to(dtype);
  at::Tensor x_ref = batch.clone().requires_grad_(true);
  (reference->forward(x_ref) * batch_g).sum().backward();

  BatchNorm bn(3, synchronised ? world : nullptr);
  bn->to(dtype);
  at::Tensor x_mine = mine_of(x).clone().requires_grad_(true);
  at::Tensor y = bn->forward(x_mine);
  (y * mine_of(g)).sum().backward();

  Reference fresh(3);
  fresh->to(dtype);
  at::Tensor y_expected = rows(fresh->forward(batch));
  EXPECT_TRUE(torch::allclose(y, y_expected, rtol, atol));
  EXPECT_TRUE(torch::allclose(x_mine.grad(), rows(x_ref.grad()), rtol, atol))
      << (x_mine.grad() - rows(x_ref.grad())).abs().max().template item<double>();
  // Parameter gradients are this rank's sums; synchronised, they add up to the reference's.
  at::Tensor dw = bn->weight.grad().clone(), db = bn->bias.grad().clone();
  if (synchronised) {
    world->all_reduce(dw, ReduceOp::kSum);
    world->all_reduce(db, ReduceOp::kSum);
  }
  EXPECT_TRUE(torch::allclose(dw, reference->weight.grad(), rtol, 10 * atol));
  EXPECT_TRUE(torch::allclose(db, reference->bias.grad(), rtol, 10 * atol));
  // Running statistics after one training step (unbiased variance, momentum 0.1).
  EXPECT_TRUE(torch::allclose(bn->running_mean, fresh->running_mean, rtol, atol));
  EXPECT_TRUE(torch::allclose(bn->running_var, fresh->running_var, rtol, atol));
  EXPECT_EQ(bn->num_batches_tracked.template item<int64_t>(), 1);
  // Eval mode normalises with the running statistics, as BatchNorm does.
  bn->eval();
  fresh->eval();
  EXPECT_TRUE(torch::allclose(bn->forward(x), fresh->forward(x), rtol, atol));
}

TEST(SyncBatchNorm, MatchesBatchNormOnTheGlobalBatch) {
  check_against<torch::nn::BatchNorm2d>({16, 3, 4, 4}, at::kFloat, 1e-4, 1e-5, true);
}

TEST(SyncBatchNorm, MatchesBatchNormInDoublePrecision) {
  check_against<torch::nn::BatchNorm2d>({16, 3, 5, 3}, at::kDouble, 1e-11, 1e-12, true);
}

TEST(SyncBatchNorm, MatchesBatchNorm1dOnRows) {
  check_against<torch::nn::BatchNorm1d>({16, 3}, at::kDouble, 1e-11, 1e-12, true);
}

TEST(LocalBatchNorm, MatchesBatchNormOnEachRanksRows) {
  check_against<torch::nn::BatchNorm2d>({16, 3, 4, 4}, at::kFloat, 1e-4, 1e-5, false);
  check_against<torch::nn::BatchNorm2d>({16, 3, 5, 3}, at::kDouble, 1e-11, 1e-12, false);
}

}  // namespace
}  // namespace uel::models
