// SyncBatchNorm on N ranks computes what torch::nn::BatchNorm2d computes on the global batch:
// outputs, input and parameter gradients, running statistics, eval mode.

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "uel/comm/sync_batch_norm.h"
#include "uel/comm/world.h"

namespace uel::comm {
namespace {

TEST(SyncBatchNorm, MatchesBatchNormOnTheGlobalBatch) {
  std::shared_ptr<Communicator> comm = make_communicator("auto", c10::Device(c10::kCPU));
  const int n = comm->size(), r = comm->rank();
  const int64_t global = 16, local = global / n;
  torch::manual_seed(7);  // the same data and upstream gradient on every rank
  at::Tensor x = torch::randn({global, 3, 4, 4}) * 2 + 1;
  at::Tensor g = torch::randn({global, 3, 4, 4});

  torch::nn::BatchNorm2d reference(3);
  at::Tensor x_ref = x.clone().requires_grad_(true);
  (reference->forward(x_ref) * g).sum().backward();

  SyncBatchNorm sync(3, comm);
  at::Tensor x_mine = x.slice(0, r * local, (r + 1) * local).clone().requires_grad_(true);
  at::Tensor y = sync->forward(x_mine);
  (y * g.slice(0, r * local, (r + 1) * local)).sum().backward();

  // Outputs and input gradients equal the reference's rows for this rank.
  torch::nn::BatchNorm2d fresh(3);
  at::Tensor y_expected = fresh->forward(x).slice(0, r * local, (r + 1) * local);
  EXPECT_TRUE(torch::allclose(y, y_expected, 1e-4, 1e-5));
  EXPECT_TRUE(
      torch::allclose(x_mine.grad(), x_ref.grad().slice(0, r * local, (r + 1) * local), 1e-4, 1e-5))
      << (x_mine.grad() - x_ref.grad().slice(0, r * local, (r + 1) * local))
             .abs()
             .max()
             .item<float>();
  // Parameter gradients are local sums; over the ranks they add up to the reference's.
  at::Tensor dw = sync->weight.grad().clone(), db = sync->bias.grad().clone();
  comm->all_reduce(dw, ReduceOp::kSum);
  comm->all_reduce(db, ReduceOp::kSum);
  EXPECT_TRUE(torch::allclose(dw, reference->weight.grad(), 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(db, reference->bias.grad(), 1e-4, 1e-4));
  // Running statistics after one training step (unbiased variance, momentum 0.1).
  EXPECT_TRUE(torch::allclose(sync->running_mean, fresh->running_mean, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(sync->running_var, fresh->running_var, 1e-5, 1e-6));
  EXPECT_EQ(sync->num_batches_tracked.item<int64_t>(), 1);
  // Eval mode normalises with the running statistics, as BatchNorm does.
  sync->eval();
  fresh->eval();
  EXPECT_TRUE(torch::allclose(sync->forward(x), fresh->forward(x), 1e-5, 1e-5));
}

}  // namespace
}  // namespace uel::comm
