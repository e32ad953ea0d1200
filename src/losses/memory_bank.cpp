#include "uel/losses/memory_bank.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "counter_uniform.h"
#include "uel/comm/autograd.h"
#include "uel/core/error.h"
#include "uel/core/rng.h"

namespace uel::losses {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Gathered rows per block of queries in the NCE scores: bounds the temporary whatever B and K.
constexpr int64_t kGatherBudget = int64_t{1} << 24;

// s[b, k] = <q[b], rows[index[b, k]]>. The seed materialises the gathered rows [B, K, D] and
// keeps them for backward; here forward gathers block by block and backward sums the rows
// weighted by the incoming gradient (embedding_bag), so memory stays O(B K + budget).
struct GatheredDot : public torch::autograd::Function<GatheredDot> {
  static at::Tensor forward(
      AutogradContext* ctx, const at::Tensor& q, const at::Tensor& rows, const at::Tensor& index) {
    ctx->save_for_backward({rows, index});
    const int64_t b = q.size(0), k = index.size(1), d = q.size(1);
    at::Tensor out = at::empty({b, k}, q.options());
    if (b == 0 || k == 0)
      return out;
    const int64_t block = std::max<int64_t>(1, kGatherBudget / (k * d));
    for (int64_t begin = 0; begin < b; begin += block) {
      const int64_t end = std::min(b, begin + block);
      const at::Tensor gathered =
          rows.index_select(0, index.slice(0, begin, end).reshape(-1)).view({end - begin, k, d});
      out.slice(0, begin, end)
          .copy_(at::bmm(gathered, q.slice(0, begin, end).unsqueeze(2)).squeeze(2));
    }
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& rows = saved[0];
    const at::Tensor& index = saved[1];
    const int64_t b = index.size(0), k = index.size(1);
    const at::Tensor offsets = at::arange(0, b * k, std::max<int64_t>(k, 1), index.options());
    at::Tensor grad_q = std::get<0>(at::embedding_bag(
        rows,
        index.reshape(-1),
        offsets.slice(0, 0, b),
        /*scale_grad_by_freq=*/false,
        /*mode=sum*/ 0,
        /*sparse=*/false,
        grads[0].contiguous().reshape(-1)));
    return {grad_q, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

void validate(const NceConfig& c) {
  UEL_CHECK_CONFIG(c.k >= 0, "--nce.k must be >= 0 (0 = full softmax), got {}", c.k);
  // The full softmax combines exp(s - 1/T) in double with |s| <= sqrt(3)/T (initial rows).
  UEL_CHECK_CONFIG(
      c.temperature >= 0.005,
      "--nce.temperature {} is below 0.005, where the softmax sums leave double's range",
      c.temperature);
  UEL_CHECK_CONFIG(
      c.z_momentum >= 0 && c.z_momentum < 1,
      "--nce.z_momentum must be in [0, 1) (0 = Z fixed after the first step), got {}",
      c.z_momentum);
  UEL_CHECK_CONFIG(
      c.momentum >= 0 && c.momentum < 1, "--nce.momentum must be in [0, 1), got {}", c.momentum);
}

MemoryBank::MemoryBank(
    int64_t size, int64_t dim, uint64_t seed, int rank, int world, at::TensorOptions options)
    : size_(size), dim_(dim), shard_(shard_range(size, rank, world)) {
  UEL_CHECK(size > 0 && dim > 0, "a memory bank needs rows and columns, got {} x {}", size, dim);
  at::Tensor rows = at::empty({shard_.size(), dim}, at::kDouble);
  double* data = rows.data_ptr<double>();
  const double a = std::sqrt(3.0 / dim);
  const uint64_t key = stream_key(seed, RngPurpose::kBank, 0, 0);
  at::parallel_for(0, shard_.size(), 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Rng rng(derive_key(key, static_cast<uint64_t>(shard_.begin + i)));
      for (int64_t j = 0; j < dim; ++j)
        data[i * dim + j] = rng.uniform(-a, a);
    }
  });
  rows_ = rows.to(options);
}

void MemoryBank::assign(const at::Tensor& rows) {
  UEL_CHECK_DATA(
      rows.dim() == 2 && rows.size(0) == shard_.size() && rows.size(1) == dim_,
      "memory-bank rows {} do not fit this rank's shard [{}, {}]",
      c10::str(rows.sizes()),
      shard_.size(),
      dim_);
  rows_.copy_(rows);
}

at::Tensor MemoryBank::draw_negatives(int64_t queries, int64_t k, uint64_t key) const {
  const auto options = at::TensorOptions().dtype(at::kLong).device(rows_.device());
  const at::Tensor u = counter_uniform(at::arange(queries * k, options), key);
  return (u * static_cast<double>(size_)).floor().to(at::kLong).view({queries, k});
}

void MemoryBank::update(const at::Tensor& items, const at::Tensor& features, double momentum) {
  UEL_CHECK(
      items.dim() == 1 && features.dim() == 2 && features.size(0) == items.size(0) &&
          features.size(1) == dim_,
      "bank update: {} items and features {} disagree",
      items.numel(),
      c10::str(features.sizes()));
  const at::Tensor cpu_items = items.to(at::kCPU, at::kLong).contiguous();
  const int64_t* item = cpu_items.data_ptr<int64_t>();
  std::vector<int64_t> local, source;
  std::vector<bool> seen(static_cast<size_t>(shard_.size()), false);
  for (int64_t i = items.size(0) - 1; i >= 0; --i) {  // from the end: the last feature wins
    const int64_t row = item[i] - shard_.begin;
    if (row < 0 || row >= shard_.size() || seen[row])
      continue;
    seen[row] = true;
    local.push_back(row);
    source.push_back(i);
  }
  if (local.empty())
    return;
  const at::Tensor rows_index = at::tensor(local, at::kLong).to(rows_.device());
  const at::Tensor feature_index = at::tensor(source, at::kLong).to(rows_.device());
  at::Tensor mixed =
      rows_.index_select(0, rows_index) * momentum +
      features.detach().to(rows_.options()).index_select(0, feature_index) * (1 - momentum);
  mixed = mixed / mixed.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
  rows_.index_copy_(0, rows_index, mixed);
}

BankLoss bank_loss(
    const at::Tensor& features,
    const at::Tensor& items,
    MemoryBank& bank,
    const NceConfig& config,
    const at::Tensor& negatives,
    comm::Communicator& comm) {
  UEL_CHECK(
      features.dim() == 2 && features.size(1) == bank.dim(),
      "bank_loss expects [b, {}] features, got {}",
      bank.dim(),
      c10::str(features.sizes()));
  UEL_CHECK(
      items.dim() == 1 && items.size(0) == features.size(0),
      "bank_loss: {} items for {} features",
      items.numel(),
      features.size(0));
  UEL_CHECK(
      features.scalar_type() == bank.rows().scalar_type(),
      "features and memory bank differ in dtype");
  const int world = comm.size();
  const double t = config.temperature;
  const int64_t n = bank.size();

  // Each rank checks its own items where they are (host memory for a training batch): checked
  // after the gather on a GPU, the check would make the host wait for the device.
  UEL_CHECK(
      items.numel() == 0 || (items.min().item<int64_t>() >= 0 && items.max().item<int64_t>() < n),
      "bank_loss: items outside the bank's {} rows",
      n);

  BankLoss out;
  const at::Tensor queries = comm::all_gather_with_grad(features, comm);
  out.items = comm.all_gather(items.to(features.device(), at::kLong));
  out.queries = queries.detach();
  const int64_t batch = queries.size(0);
  UEL_CHECK(batch == features.size(0) * world, "ranks disagree on the local batch size");

  const ShardRange shard = bank.shard();
  const at::Tensor& rows = bank.rows();
  // Positive scores of the queries whose row this rank owns.
  const at::Tensor owners =
      out.items.ge(shard.begin).logical_and(out.items.lt(shard.end)).nonzero().squeeze(1);
  const at::Tensor positive =
      (queries.index_select(0, owners) *
       rows.index_select(0, out.items.index_select(0, owners) - shard.begin))
          .sum(1) /
      t;

  at::Tensor partial;  // this rank's terms; they sum over ranks to the global loss
  if (config.k > 0) {
    UEL_CHECK(
        negatives.dim() == 2 && negatives.size(0) == batch && negatives.size(1) == config.k,
        "bank_loss: negatives must be draw_negatives({}, {}), got {}",
        batch,
        config.k,
        c10::str(negatives.sizes()));
    // The (query, row) pairs whose row this rank owns, in query order; a rank may own none.
    // Each query's own negatives are packed into a row of a [B, width] block (width: the most
    // any query owns, about K / P), scored with batched matmuls, and read back pair by pair.
    const at::Tensor all = negatives.to(rows.device());
    const at::Tensor owned = all.ge(shard.begin).logical_and(all.lt(shard.end));
    const at::Tensor query = owned.nonzero().select(1, 0);
    const at::Tensor counts = at::bincount(query, {}, batch);
    const int64_t width = query.numel() > 0 ? counts.max().item<int64_t>() : 0;
    at::Tensor negative = at::zeros({0}, queries.options());
    if (width > 0) {
      const at::Tensor slot = at::arange(query.numel(), query.options()) -
                              (counts.cumsum(0) - counts).index_select(0, query);
      at::Tensor packed = at::zeros({batch, width}, all.options());
      packed.index_put_({query, slot}, all.masked_select(owned) - shard.begin);
      negative =
          GatheredDot::apply(queries, rows, packed).view(-1).index_select(0, query * width + slot) /
          t;
    }
    if (bank.z() < 0 || config.z_momentum > 0) {
      // Z = N * mean(exp(s)) over every score of the step, positives included.
      at::Tensor stats = at::stack(
          {at::exp(positive.detach().to(at::kDouble)).sum() +
               at::exp(negative.detach().to(at::kDouble)).sum(),
           at::full({}, static_cast<double>(positive.numel() + negative.numel()), at::kDouble)
               .to(rows.device())});
      comm.all_reduce(stats, comm::ReduceOp::kSum);
      const at::Tensor cpu = stats.cpu();
      const double z = n * cpu[0].item<double>() / cpu[1].item<double>();
      bank.set_z(bank.z() < 0 ? z : config.z_momentum * bank.z() + (1 - config.z_momentum) * z);
    }
    const double log_z = std::log(bank.z());
    const double k_pn = static_cast<double>(config.k) / n;
    const double c = std::log(k_pn + 1e-7);
    // log(P / (P + e^c)) = -softplus(c - log P); log(K Pn / (P + e^c)) = log(K Pn) - c -
    // softplus(log P - c): the seed's ratios without overflow or log(0).
    const at::Tensor positive_terms = -at::softplus(c - (positive - log_z));
    const at::Tensor negative_terms = std::log(k_pn) - c - at::softplus(negative - log_z - c);
    partial = -(positive_terms.sum() + negative_terms.sum()) / batch;
  } else {
    // Local log-sum-exp per query, rescaled to the shared reference 1/T (|s| <= sqrt(3)/T) and
    // summed over ranks in double; w = exp(lse_r - lse) routes each rank's share of the gradient.
    at::Tensor sums = at::zeros({batch}, queries.options().dtype(at::kDouble));
    at::Tensor local_lse;
    if (shard.size() > 0) {
      local_lse = at::logsumexp(queries.matmul(rows.t()) / t, 1);
      sums = at::exp(local_lse.detach().to(at::kDouble) - 1 / t);
    }
    comm.all_reduce(sums, comm::ReduceOp::kSum);
    const at::Tensor lse = at::log(sums) + 1 / t;
    partial = (lse.sum() / world).to(queries.scalar_type()) - positive.sum();
    if (local_lse.defined()) {
      const at::Tensor weight =
          at::exp(local_lse.detach().to(at::kDouble) - lse).to(queries.scalar_type());
      partial = partial + (weight * (local_lse - local_lse.detach())).sum();
    }
    partial = partial / batch;
  }
  out.loss = partial * world;
  return out;
}

}  // namespace uel::losses
