// comm.check_order: a rank that issues another collective is named with every rank's entry
// (not a hang), and a real training step (ResNet-18 with SyncBatchNorm, many gradient buckets,
// an all-gathered loss) passes the check in both bucket launch modes.

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/comm/autograd.h"
#include "uel/comm/grad_sync.h"
#include "uel/comm/order_check.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/models/embedding_net.h"

namespace uel::comm {
namespace {

// Communicators made while it lives verify every collective.
struct CheckOrder {
  CheckOrder() {
    set_check_order(true);
  }
  ~CheckOrder() {
    set_check_order(false);
  }
};

TEST(CheckOrder, AgreeingRanksPassAndEveryCollectiveIsCounted) {
  if (world().size == 1)
    GTEST_SKIP() << "one rank has nobody to disagree with";
  CheckOrder on;
  auto comm = make_communicator("mpi", c10::Device(c10::kCPU));
  ASSERT_NE(comm->order_check(), nullptr);
  at::Tensor t = at::ones({4});
  comm->all_reduce(t, ReduceOp::kSum);
  comm->all_gather(t);
  comm->all_gather_v(at::ones({comm->rank() + 1, 3}));  // rows may differ: the v-collectives
  comm->broadcast(t, 0);
  comm->barrier();
  EXPECT_EQ(comm->order_check()->verified(), 5);
  EXPECT_EQ(make_communicator("mpi", c10::Device(c10::kCPU))->order_check()->verified(), 0);
}

TEST(CheckOrder, ADifferentCollectiveOnOneRankIsNamedWithEveryRanksEntry) {
  if (world().size == 1)
    GTEST_SKIP() << "one rank has nobody to disagree with";
  CheckOrder on;
  auto comm = make_communicator("mpi", c10::Device(c10::kCPU));
  at::Tensor agreed = at::ones({2});
  comm->all_reduce(agreed, ReduceOp::kSum);
  // Rank 0 reduces 4 floats, the others 8 doubles: without the check, MPI would mix them.
  at::Tensor t = comm->rank() == 0 ? at::ones({4}) : at::ones({8}, at::kDouble);
  const std::string others = world().size == 2 ? "rank 1:" : "rank 1,2,3:";
  try {
    comm->all_reduce(t, ReduceOp::kSum);
    ADD_FAILURE() << "the mismatch was not caught";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("different collectives at collective #1"), std::string::npos) << what;
    EXPECT_NE(
        what.find("rank 0: #1 all_reduce on communicator 0 Float x 4 (sum)"), std::string::npos)
        << what;
    EXPECT_NE(
        what.find(others + " #1 all_reduce on communicator 0 Double x 8 (sum)"), std::string::npos)
        << what;
  }
  // Every rank caught it at the same point: the communicator goes on in step.
  at::Tensor after = at::ones({3});
  comm->all_reduce(after, ReduceOp::kSum);
  EXPECT_TRUE(at::equal(after, at::full({3}, world().size)));
}

// Two steps of a ResNet-18 (CIFAR stem, 8x8 inputs) with SyncBatchNorm, ~1 MB buckets and an
// all-gathered softmax loss, every collective checked. Returns the final parameters' checksum.
double train_resnet(BucketLaunch launch) {
  CheckOrder on;
  std::shared_ptr<Communicator> comm = make_communicator("auto", c10::Device(c10::kCPU));
  models::ModelConfig config;
  config.arch = "resnet18";
  config.low_dim = 16;
  config.sync_bn = true;
  torch::manual_seed(3);
  models::EmbeddingNet net(config, comm);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& p : net->named_parameters())
    params.emplace_back(p.key(), p.value());
  std::vector<at::Tensor> buffers;
  for (const auto& b : net->named_buffers())
    buffers.push_back(b.value());
  GradSyncOptions options;
  options.launch = launch;
  options.bucket_mb = 1;
  options.first_bucket_mb = 0.25;
  GradSync sync(params, buffers, *comm, options);
  EXPECT_EQ(sync.launches_inline(), launch == BucketLaunch::kInline);
  EXPECT_GT(sync.bucket_layout().size(), 10u);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  const int64_t global = 8, local = global / comm->size();
  for (int step = 0; step < 2; ++step) {
    torch::manual_seed(10 + step);
    const at::Tensor x = torch::randn({global, 3, 8, 8});
    const at::Tensor mine = x.slice(0, comm->rank() * local, (comm->rank() + 1) * local);
    const at::Tensor e = net->forward(mine);
    const at::Tensor keys = all_gather_with_grad(e, *comm);
    opt.zero_grad();
    at::logsumexp(e.matmul(keys.t()) / 0.5, 1).mean().backward();
    sync.finish();
    opt.step();
  }
  double sum = 0;
  for (const auto& p : net->parameters())
    sum += p.detach().to(at::kDouble).abs().sum().item<double>();
  // Every rank holds the same model.
  EXPECT_DOUBLE_EQ(comm->all_reduce_scalar(sum, ReduceOp::kMax), sum);
  EXPECT_DOUBLE_EQ(comm->all_reduce_scalar(sum, ReduceOp::kMin), sum);
  return sum;
}

TEST(CheckOrder, ResNetWithSyncBatchNormAndManyBucketsPassesInBothLaunchModes) {
  const double threaded = train_resnet(BucketLaunch::kThread);
  const double in_backward = train_resnet(BucketLaunch::kInline);
  EXPECT_NEAR(threaded, in_backward, 1e-6 * threaded);
}

}  // namespace
}  // namespace uel::comm
