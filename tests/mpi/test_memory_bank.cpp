// The sharded memory bank against direct single-process computations of the seed's formulas on
// the whole bank (lemniscate's LinearAverage and NCEAverage + NCECriterion), on 1, 2 and 4 ranks:
// losses, query gradients, the Z estimate, the momentum update and the bytes moved per step.

#include <torch/torch.h>

#include <cmath>
#include <set>

#include <gtest/gtest.h>

#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/core/rng.h"
#include "uel/core/shard.h"
#include "uel/losses/memory_bank.h"

namespace uel::losses {
namespace {

constexpr uint64_t kSeed = 5;

std::shared_ptr<comm::Communicator> cpu_comm() {
  return comm::make_communicator("auto", c10::Device(c10::kCPU));
}

at::TensorOptions options(at::ScalarType type) {
  return at::TensorOptions().dtype(type);
}

// The whole bank as one process holds it: the same rows any world size starts from.
at::Tensor whole_bank(int64_t n, int64_t dim, at::ScalarType type) {
  return MemoryBank(n, dim, kSeed, 0, 1, options(type)).rows();
}

// A global batch of unit queries and their rows, identical on every rank.
std::pair<at::Tensor, at::Tensor> global_batch(int64_t b, int64_t n, int64_t dim) {
  torch::manual_seed(3);
  at::Tensor q = torch::randn({b, dim}, torch::kDouble);
  q = q / q.norm(2, 1, true);
  at::Tensor items = torch::randint(n, {b}, torch::kLong);
  return {q, items};
}

struct Step {
  double loss = 0;      // averaged over ranks: the global loss
  at::Tensor gradient;  // this rank's query gradient / world size: the global loss's
};

Step distributed_step(
    const at::Tensor& q,
    const at::Tensor& items,
    MemoryBank& bank,
    const NceConfig& config,
    const at::Tensor& negatives,
    comm::Communicator& comm,
    at::ScalarType type) {
  const int64_t b = q.size(0) / comm.size(), r = comm.rank();
  at::Tensor mine = q.slice(0, r * b, (r + 1) * b).to(type).clone().requires_grad_(true);
  BankLoss out = bank_loss(mine, items.slice(0, r * b, (r + 1) * b), bank, config, negatives, comm);
  out.loss.backward();
  Step step;
  step.loss = comm.all_reduce_scalar(out.loss.item<double>(), comm::ReduceOp::kAvg);
  step.gradient = mine.grad().to(torch::kDouble) / comm.size();
  EXPECT_TRUE(torch::equal(out.items, items));
  EXPECT_TRUE(torch::allclose(out.queries.to(torch::kDouble), q, 0, 1e-6));
  return step;
}

TEST(MemoryBank, RowsDependOnlyOnSeedAndRow) {
  auto comm = cpu_comm();
  const int64_t n = 37, dim = 8;
  MemoryBank bank(n, dim, kSeed, comm->rank(), comm->size(), options(torch::kFloat));
  const ShardRange shard = shard_range(n, comm->rank(), comm->size());
  EXPECT_EQ(bank.shard().begin, shard.begin);
  EXPECT_EQ(bank.shard().end, shard.end);
  const at::Tensor whole = whole_bank(n, dim, torch::kFloat);
  EXPECT_TRUE(torch::equal(bank.rows(), whole.slice(0, shard.begin, shard.end)));
  // The seed's init: Uniform(-a, a), a = sqrt(3 / D).
  EXPECT_LE(whole.abs().max().item<double>(), std::sqrt(3.0 / dim));
  EXPECT_NEAR(whole.pow(2).sum(1).mean().item<double>(), 1.0, 0.1);
  EXPECT_FALSE(
      torch::equal(whole, MemoryBank(n, dim, kSeed + 1, 0, 1, options(torch::kFloat)).rows()));
}

// LinearAverage + CrossEntropyLoss on the whole bank, through autograd.
TEST(MemoryBank, FullSoftmaxMatchesTheDirectComputation) {
  auto comm = cpu_comm();
  // n = 3 leaves a rank without rows at 4 ranks.
  for (const int64_t n : {int64_t{37}, int64_t{3}}) {
    for (const auto type : {torch::kDouble, torch::kFloat}) {
      for (const double t : {0.07, 0.5}) {
        const int64_t dim = 8, b = 4;
        auto [q, items] = global_batch(b, n, dim);
        const at::Tensor v = whole_bank(n, dim, torch::kDouble);
        at::Tensor q_ref = q.clone().requires_grad_(true);
        at::Tensor logits = q_ref.matmul(v.t()) / t;
        at::Tensor expected = torch::nn::functional::cross_entropy(logits, items);
        expected.backward();

        MemoryBank bank(n, dim, kSeed, comm->rank(), comm->size(), options(type));
        NceConfig config;
        config.k = 0;
        config.temperature = t;
        const Step got = distributed_step(q, items, bank, config, {}, *comm, type);
        const double tol = type == torch::kDouble ? 1e-10 : 1e-5;
        EXPECT_NEAR(got.loss, expected.item<double>(), tol * std::abs(expected.item<double>()))
            << "n " << n << " t " << t;
        const int64_t local = b / comm->size(), r = comm->rank();
        EXPECT_TRUE(torch::allclose(
            got.gradient, q_ref.grad().slice(0, r * local, (r + 1) * local), tol, tol))
            << "n " << n << " t " << t << "\n"
            << got.gradient << "\n"
            << q_ref.grad();
      }
    }
  }
}

// Negatives are element (b, j) = floor(u N), u = (derive_key(key, b k + j) >> 11) 2^-53:
// the host formula, the same on every rank; uniform over the N rows; a new draw every step.
TEST(MemoryBank, NegativesAreTheHostHashUniformOverAllRowsAndFreshEachStep) {
  auto comm = cpu_comm();
  const int64_t n = 50, b = 64, k = 250;
  MemoryBank bank(n, 4, kSeed, comm->rank(), comm->size(), options(torch::kFloat));
  const at::Tensor draw = bank.draw_negatives(b, k, 77);
  ASSERT_EQ(draw.sizes(), (std::vector<int64_t>{b, k}));
  const int64_t* got = draw.data_ptr<int64_t>();
  for (int64_t i = 0; i < b * k; ++i) {
    const double u = static_cast<double>(derive_key(77, i) >> 11) * 0x1.0p-53;
    ASSERT_EQ(got[i], static_cast<int64_t>(u * n)) << "element " << i;
  }
  // Every rank drew the same rows.
  const at::Tensor all = comm->all_gather(draw.unsqueeze(0));
  for (int r = 1; r < comm->size(); ++r)
    EXPECT_TRUE(torch::equal(all[r], draw));
  // Chi-square over the N rows (16,000 draws, 49 degrees of freedom: p = 1e-6 at 99.3).
  const at::Tensor counts = torch::bincount(draw.reshape(-1), {}, n).to(torch::kDouble);
  const double expected = static_cast<double>(b * k) / n;
  const double chi2 = ((counts - expected).pow(2) / expected).sum().item<double>();
  EXPECT_LT(chi2, 99.3) << counts;
  EXPECT_EQ(counts.min().item<double>() > 0, true);
  // Another step's key: agreement at a position is chance (1/N), not a copy.
  const double same =
      draw.eq(bank.draw_negatives(b, k, 78)).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(same, 1.0 / n, 0.01);
}

// The seed's NCEAverage forward (column 0 the positive, Z from the first call; with z_momentum
// a moving average of every call's estimate) and NCECriterion, term by term as it writes them.
at::Tensor seed_nce(
    const at::Tensor& q,
    const at::Tensor& items,
    const at::Tensor& negatives,
    const at::Tensor& v,
    double t,
    double z_momentum,
    double& z) {
  const int64_t n = v.size(0), k = negatives.size(1);
  const at::Tensor idx = torch::cat({items.view({-1, 1}), negatives}, 1);
  at::Tensor out = torch::exp(
      torch::bmm(v.index_select(0, idx.view(-1)).view({q.size(0), k + 1, -1}), q.unsqueeze(2))
          .squeeze(2) /
      t);
  const double estimate = out.mean().item<double>() * n;
  if (z < 0)
    z = estimate;
  else if (z_momentum > 0)
    z = z_momentum * z + (1 - z_momentum) * estimate;
  out = out / z;
  const double pn = 1.0 / n, eps = 1e-7;
  at::Tensor p0 = out.select(1, 0);
  at::Tensor lnpmt = torch::log(p0 / (p0 + k * pn + eps));
  at::Tensor pk = out.slice(1, 1);
  at::Tensor lnpon = torch::log((k * pn) / (pk + k * pn + eps));
  return -(lnpmt.sum() + lnpon.sum()) / q.size(0);
}

// k = 1 and 3 leave some of 2 or 4 ranks without a single negative of their own.
TEST(MemoryBank, NceWithAFixedDrawMatchesTheSeedFormula) {
  auto comm = cpu_comm();
  const int64_t n = 37, dim = 8, b = 8;
  // Both layouts of the negatives: compact (CPUs' default) and dense (GPUs', no host read).
  for (const auto& [type, z_momentum, k, layout] :
       {std::tuple{torch::kDouble, 0.0, int64_t{10}, NegativeLayout::kCompact},
        {torch::kDouble, 0.0, int64_t{10}, NegativeLayout::kDense},
        {torch::kFloat, 0.0, int64_t{10}, NegativeLayout::kCompact},
        {torch::kFloat, 0.0, int64_t{10}, NegativeLayout::kDense},
        {torch::kDouble, 0.9, int64_t{10}, NegativeLayout::kCompact},
        {torch::kDouble, 0.9, int64_t{10}, NegativeLayout::kDense},
        {torch::kDouble, 0.0, int64_t{1}, NegativeLayout::kCompact},
        {torch::kDouble, 0.0, int64_t{1}, NegativeLayout::kDense},
        {torch::kDouble, 0.0, int64_t{3}, NegativeLayout::kAuto}}) {
    const double t = 0.1, tol = type == torch::kDouble ? 1e-10 : 1e-5;
    const at::Tensor v = whole_bank(n, dim, torch::kDouble);
    MemoryBank bank(n, dim, kSeed, comm->rank(), comm->size(), options(type));
    NceConfig config;
    config.k = k;
    config.temperature = t;
    config.z_momentum = z_momentum;
    config.layout = layout;
    double z = -1;
    for (uint64_t step = 0; step < 2; ++step) {  // the second step reuses or averages Z
      torch::manual_seed(step);
      at::Tensor q = torch::randn({b, dim}, torch::kDouble);
      q = q / q.norm(2, 1, true);
      const at::Tensor items = torch::randint(n, {b}, torch::kLong);
      const at::Tensor negatives = bank.draw_negatives(b, k, 100 + step);
      at::Tensor q_ref = q.clone().requires_grad_(true);
      at::Tensor expected = seed_nce(q_ref, items, negatives, v, t, z_momentum, z);
      expected.backward();

      const int r = comm->rank();
      const Step got = distributed_step(q, items, bank, config, negatives, *comm, type);
      EXPECT_NEAR(bank.z(), z, tol * z);
      EXPECT_NEAR(got.loss, expected.item<double>(), tol * std::abs(expected.item<double>()))
          << "k " << k << " layout " << static_cast<int>(layout);
      const int64_t local = b / comm->size();
      EXPECT_TRUE(torch::allclose(
          got.gradient, q_ref.grad().slice(0, r * local, (r + 1) * local), tol, tol))
          << "k " << k << " layout " << static_cast<int>(layout);
    }
  }
}

TEST(MemoryBank, UpdateTouchesExactlyTheOwnedRowsOfTheStep) {
  auto comm = cpu_comm();
  const int64_t n = 37, dim = 8;
  MemoryBank bank(n, dim, kSeed, comm->rank(), comm->size(), options(torch::kDouble));
  const at::Tensor before = bank.rows().clone();
  // Row 5 appears twice: its last feature wins. The shards' edge rows (37 rows: 0-18, 19-36 on 2
  // ranks; 0-9, 10-18, 19-27, 28-36 on 4) are where other ranks' items land once clamped.
  const at::Tensor items = torch::tensor({5, 0, 36, 17, 5, 30, 9, 10, 18, 27, 28}, torch::kLong);
  torch::manual_seed(9);
  at::Tensor features = torch::randn({items.size(0), dim}, torch::kDouble);
  features = features / features.norm(2, 1, true);
  const double m = 0.5;
  bank.update(items, features, m);
  const ShardRange shard = bank.shard();
  for (int64_t row = shard.begin; row < shard.end; ++row) {
    const at::Tensor old_row = before[row - shard.begin], new_row = bank.rows()[row - shard.begin];
    int64_t last = -1;
    for (int64_t i = 0; i < items.size(0); ++i) {
      if (items[i].item<int64_t>() == row)
        last = i;
    }
    if (last < 0) {
      EXPECT_TRUE(torch::equal(old_row, new_row)) << "row " << row << " is not in the step";
    } else {
      at::Tensor expected = m * old_row + (1 - m) * features[last];
      expected = expected / expected.norm();
      EXPECT_TRUE(torch::allclose(new_row, expected, 1e-12, 1e-12)) << "row " << row;
    }
  }
}

// Bytes handed to collectives per step: the features' all-gather (b D), the items' (b), the
// gradients' reduce-scatter (B D), and for the full softmax one all-reduce of B doubles, whatever
// N and K.
TEST(MemoryBank, BytesPerStepDoNotDependOnRowsOrNegatives) {
  auto comm = cpu_comm();
  const int world = comm->size();
  const int64_t dim = 16, b = 8, local = b / world;
  for (const int64_t k : {int64_t{0}, int64_t{4096}, int64_t{16384}}) {
    for (const int64_t n : {int64_t{10000}, int64_t{100000}}) {
      MemoryBank bank(n, dim, kSeed, comm->rank(), world, options(torch::kFloat));
      NceConfig config;
      config.k = k;
      int64_t bytes = 0;
      for (uint64_t step = 0; step < 2; ++step) {  // the first NCE step also estimates Z
        auto [q, items] = global_batch(b, n, dim);
        at::Tensor mine = q.slice(0, comm->rank() * local, (comm->rank() + 1) * local)
                              .to(torch::kFloat)
                              .requires_grad_(true);
        const at::Tensor negatives = k > 0 ? bank.draw_negatives(b, k, step) : at::Tensor();
        const comm::CommStats before = comm->stats();
        BankLoss out = bank_loss(
            mine,
            items.slice(0, comm->rank() * local, (comm->rank() + 1) * local),
            bank,
            config,
            negatives,
            *comm);
        out.loss.backward();
        bank.update(out.items, out.queries, config.momentum);
        bytes = comm->stats().total_bytes() - before.total_bytes();
      }
      const int64_t expected = local * dim * 4 + local * 8 + b * dim * 4 + (k == 0 ? b * 8 : 0);
      EXPECT_EQ(bytes, expected) << "N " << n << " K " << k;
    }
  }
}

TEST(MemoryBank, RejectsBadInput) {
  auto comm = cpu_comm();
  MemoryBank bank(10, 4, kSeed, comm->rank(), comm->size(), options(torch::kFloat));
  NceConfig config;
  config.k = 0;
  const at::Tensor features = torch::zeros({1, 4});
  EXPECT_THROW(
      bank_loss(torch::zeros({1, 5}), torch::zeros({1}, torch::kLong), bank, config, {}, *comm),
      Error);
  EXPECT_THROW(
      bank_loss(features, torch::full({1}, 10, torch::kLong), bank, config, {}, *comm), Error);
  config.temperature = 0.001;
  EXPECT_THROW(validate(config), ConfigError);
  config.temperature = 0.07;
  config.momentum = 1;
  EXPECT_THROW(validate(config), ConfigError);
}

}  // namespace
}  // namespace uel::losses
