// Closed-form checks of every collective for every dtype, uneven and empty contributions.

#include <atomic>
#include <chrono>
#include <thread>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/cuda.h>

#include "test_util.h"
#include "uel/comm/communicator.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"

namespace uel::comm {
namespace {

const std::vector<at::ScalarType> kTypes = {
    at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kInt, at::kLong, at::kByte};

// Every test runs for each (device, backend) pair; CUDA pairs skip without a usable GPU.
struct Setup {
  std::string device;
  std::string backend;
};

class CommTest : public ::testing::TestWithParam<Setup> {
 protected:
  void SetUp() override {
    if (GetParam().device == "cuda" && !torch::cuda::is_available()) {
      GTEST_SKIP() << "no usable CUDA device";
    }
#ifndef UEL_HAVE_NCCL
    if (GetParam().backend == "nccl") {
      GTEST_SKIP() << "built without NCCL";
    }
#endif
    if (GetParam().backend == "nccl" &&
        world().local_size > static_cast<int>(torch::cuda::device_count())) {
      GTEST_SKIP() << "NCCL needs one GPU per rank: " << world().local_size << " ranks, "
                   << torch::cuda::device_count() << " GPU(s)";
    }
    device_ = select_device(GetParam().device, /*share_gpus=*/GetParam().backend == "mpi");
    // One process alone has no MPI peers: the local backend stands in for mpi.
    const std::string backend =
        GetParam().backend == "mpi" && world().size == 1 ? "local" : GetParam().backend;
    comm_ = make_communicator(backend, device_);
  }
  at::TensorOptions opts(at::ScalarType type) const {
    return at::TensorOptions().dtype(type).device(device_);
  }
  c10::Device device_{c10::kCPU};
  std::unique_ptr<Communicator> comm_;
};

INSTANTIATE_TEST_SUITE_P(
    Backends,
    CommTest,
    ::testing::Values(Setup{"cpu", "mpi"}, Setup{"cuda", "mpi"}, Setup{"cuda", "nccl"}),
    [](const auto& info) { return info.param.device + "_" + info.param.backend; });

TEST_P(CommTest, BackendMatchesTheWorld) {
  Communicator* comm = comm_.get();
  EXPECT_EQ(comm->size(), world().size);
  EXPECT_EQ(comm->rank(), world().rank);
  const std::string expected = GetParam().backend == "nccl" ? "nccl"
                               : world().size > 1           ? "mpi"
                                                            : "local";
  EXPECT_EQ(comm->backend(), expected);
  EXPECT_EQ(device_.is_cuda(), GetParam().device == "cuda");
  if (world().size > 1) {
    EXPECT_THROW_WITH(
        make_communicator("local", c10::Device(c10::kCPU)), ConfigError, "use mpi or nccl");
  }
  EXPECT_THROW_WITH(
      make_communicator("gloo", c10::Device(c10::kCPU)),
      ConfigError,
      "not one of auto|mpi|nccl|local");
}

TEST_P(CommTest, AllReduceEveryOpAndDtype) {
  Communicator* comm = comm_.get();
  const int n = comm->size(), r = comm->rank();
  for (auto type : kTypes) {
    const auto opts = this->opts(type);
    at::Tensor sum = at::full({5, 3}, r + 1, opts);
    comm->all_reduce(sum, ReduceOp::kSum);
    EXPECT_TRUE(at::equal(sum, at::full({5, 3}, n * (n + 1) / 2, opts))) << c10::toString(type);
    at::Tensor mx = at::full({7}, r + 1, opts);
    comm->all_reduce(mx, ReduceOp::kMax);
    EXPECT_TRUE(at::equal(mx, at::full({7}, n, opts)));
    at::Tensor mn = at::full({7}, r + 1, opts);
    comm->all_reduce(mn, ReduceOp::kMin);
    EXPECT_TRUE(at::equal(mn, at::full({7}, 1, opts)));
    if (at::isFloatingType(type)) {
      at::Tensor avg = at::full({4}, 2 * (r + 1), opts);
      comm->all_reduce(avg, ReduceOp::kAvg);
      EXPECT_TRUE(at::equal(avg, at::full({4}, n + 1, opts)));
    } else {
      at::Tensor t = at::ones({2}, opts);
      EXPECT_THROW_WITH(
          comm->all_reduce(t, ReduceOp::kAvg), Error, "needs a floating-point tensor");
    }
  }
  // A non-contiguous view is reduced in place too.
  at::Tensor base = at::full({4, 4}, r + 1.0, opts(at::kFloat));
  at::Tensor column = base.select(1, 2);
  comm->all_reduce(column, ReduceOp::kSum);
  EXPECT_EQ(base[3][2].item<float>(), n * (n + 1) / 2.0f);
  EXPECT_EQ(base[3][1].item<float>(), r + 1.0f);
  EXPECT_DOUBLE_EQ(comm->all_reduce_scalar(0.5 * r, ReduceOp::kSum), 0.25 * n * (n - 1));
}

TEST_P(CommTest, AllGatherConcatenatesInRankOrder) {
  Communicator* comm = comm_.get();
  const int n = comm->size(), r = comm->rank();
  for (auto type : kTypes) {
    const auto opts = this->opts(type);
    at::Tensor mine = at::full({2, 3}, r, opts);
    at::Tensor all = comm->all_gather(mine);
    ASSERT_EQ(all.sizes(), (std::vector<int64_t>{2 * n, 3}));
    for (int s = 0; s < n; ++s) {
      EXPECT_TRUE(at::equal(all.slice(0, 2 * s, 2 * s + 2), at::full({2, 3}, s, opts)));
    }
  }
}

TEST_P(CommTest, AllGatherVTakesUnevenAndEmptyContributions) {
  Communicator* comm = comm_.get();
  const int n = comm->size(), r = comm->rank();
  for (auto type : kTypes) {
    const auto opts = this->opts(type);
    // Rank r contributes r rows (rank 0 none) of value r.
    at::Tensor mine = at::full({r, 2}, r, opts);
    at::Tensor all = comm->all_gather_v(mine);
    ASSERT_EQ(all.size(0), n * (n - 1) / 2);
    ASSERT_EQ(all.size(1), 2);
    int64_t row = 0;
    for (int s = 0; s < n; ++s) {
      for (int k = 0; k < s; ++k, ++row) {
        EXPECT_EQ(all[row][1].item<double>(), s);
      }
    }
  }
}

TEST_P(CommTest, BroadcastFromTheLastRank) {
  Communicator* comm = comm_.get();
  const int n = comm->size(), r = comm->rank();
  for (auto type : kTypes) {
    const auto opts = this->opts(type);
    at::Tensor t = at::full({3, 3}, r + 7, opts);
    comm->broadcast(t, n - 1);
    EXPECT_TRUE(at::equal(t, at::full({3, 3}, n - 1 + 7, opts)));
  }
  at::Tensor t = at::zeros({1}, opts(at::kFloat));
  EXPECT_THROW_WITH(comm->broadcast(t, n), Error, "broadcast");
}

TEST_P(CommTest, ReduceScatterSumsBlocks) {
  Communicator* comm = comm_.get();
  const int n = comm->size(), r = comm->rank();
  for (auto type : kTypes) {
    const auto opts = this->opts(type);
    // Block b of rank r holds r + b; the reduced block b is sum_r (r + b).
    at::Tensor in =
        at::arange(n, opts.dtype(at::kLong)).repeat_interleave(2).view({2 * n, 1}).add(r).to(type);
    at::Tensor out = comm->reduce_scatter(in, ReduceOp::kSum);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 1}));
    EXPECT_TRUE(at::equal(out, at::full({2, 1}, n * r + n * (n - 1) / 2, opts)))
        << c10::toString(type);
  }
  at::Tensor avg =
      comm->reduce_scatter(at::full({n, 2}, 2.0 * (r + 1), opts(at::kFloat)), ReduceOp::kAvg);
  EXPECT_TRUE(at::equal(avg, at::full({1, 2}, n + 1.0f, opts(at::kFloat))));
  if (n > 1) {
    EXPECT_THROW_WITH(
        comm->reduce_scatter(at::zeros({n + 1}, opts(at::kFloat)), ReduceOp::kSum),
        Error,
        "divisible by the world size");
  }
}

TEST_P(CommTest, AllToAllVRoutesRows) {
  Communicator* comm = comm_.get();
  const int n = comm->size(), r = comm->rank();
  for (auto type : kTypes) {
    const auto opts = this->opts(type);
    // Rank r sends (r + s) % 3 rows of value 10 r + s to rank s (some counts are zero).
    std::vector<int64_t> counts(n);
    std::vector<at::Tensor> parts;
    for (int s = 0; s < n; ++s) {
      counts[s] = (r + s) % 3;
      parts.push_back(at::full({counts[s], 2}, 10 * r + s, opts));
    }
    at::Tensor out = comm->all_to_all_v(at::cat(parts), counts);
    int64_t row = 0;
    for (int s = 0; s < n; ++s) {
      for (int k = 0; k < (s + r) % 3; ++k, ++row) {
        ASSERT_LT(row, out.size(0));
        EXPECT_EQ(out[row][0].item<double>(), 10 * s + r);
      }
    }
    EXPECT_EQ(out.size(0), row);
  }
  EXPECT_THROW_WITH(
      comm->all_to_all_v(at::zeros({1, 1}, opts(at::kFloat)), std::vector<int64_t>(n + 1, 0)),
      Error,
      "one send count per rank");
}

TEST_P(CommTest, CountsBytesPerOp) {
  Communicator* comm = comm_.get();
  comm->reset_stats();
  at::Tensor t = at::zeros({256}, opts(at::kFloat));
  comm->all_reduce(t, ReduceOp::kSum);
  comm->all_reduce(t, ReduceOp::kSum);
  comm->all_gather(at::zeros({8, 4}, opts(at::kDouble)));
  comm->barrier();
  const CommStats stats = comm->stats();
  EXPECT_EQ(stats.ops[static_cast<int>(Op::kAllReduce)].calls, 2);
  EXPECT_EQ(stats.ops[static_cast<int>(Op::kAllReduce)].bytes, 2 * 1024);
  EXPECT_EQ(stats.ops[static_cast<int>(Op::kAllGather)].bytes, 256);
  EXPECT_EQ(stats.ops[static_cast<int>(Op::kBarrier)].calls, 1);
  EXPECT_EQ(stats.total_bytes(), 2048 + 256);
  EXPECT_GE(stats.total_seconds(), 0.0);
}

TEST_P(CommTest, SplitGivesAnIndependentCommunicator) {
  Communicator* comm = comm_.get();
  auto other = comm->split();
  EXPECT_EQ(other->size(), comm->size());
  EXPECT_EQ(other->rank(), comm->rank());
  at::Tensor t = at::ones({3}, opts(at::kFloat));
  other->all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(t[0].item<float>(), comm->size());
  if (GetParam().backend == "nccl") {
    GTEST_SKIP() << "NCCL runs a GPU's collectives in launch order across its communicators "
                    "(DESIGN.md §3): split NCCL communicators are not for concurrent threads";
  }
  int level = 0;
  MPI_Query_thread(&level);
  if (world().size > 1 && level < MPI_THREAD_MULTIPLE) {
    GTEST_SKIP() << "MPI provides thread level " << level
                 << ", below MPI_THREAD_MULTIPLE: two threads may not run collectives at once";
  }
  // Two threads all-reduce at once, each on its own communicator, with values only its own
  // peers contribute: a collective matched with the other thread's (a shared communicator)
  // sums the wrong values.
  const int n = comm->size(), r = comm->rank();
  constexpr int kRounds = 500;
  // The two threads meet before every round, so their collectives overlap.
  std::atomic<int> arrived{0}, round{0};
  auto meet = [&] {
    const int current = round.load();
    if (arrived.fetch_add(1) == 1) {
      arrived = 0;
      ++round;
    }
    while (round.load() == current)
      std::this_thread::yield();
  };
  // Even ranks start the main thread's collective first, odd ranks the other thread's: on a
  // shared communicator each would meet the other thread's collective on the neighbour rank.
  auto run = [&](Communicator* c, float base, bool main_thread, int* wrong) {
    for (int i = 0; i < kRounds; ++i) {
      meet();
      if (main_thread != (r % 2 == 0))
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      at::Tensor t = at::full({64}, base * (r + 1) + i, opts(at::kFloat));
      c->all_reduce(t, ReduceOp::kSum);
      const float want = base * n * (n + 1) / 2 + static_cast<float>(n) * i;
      *wrong += !at::all(t == want).item<bool>();
    }
  };
  int wrong_main = 0, wrong_other = 0;
  std::thread thread([&] { run(other.get(), 1000.0f, false, &wrong_other); });
  run(comm, 1.0f, true, &wrong_main);
  thread.join();
  EXPECT_EQ(wrong_main, 0);
  EXPECT_EQ(wrong_other, 0);
}

}  // namespace
}  // namespace uel::comm
