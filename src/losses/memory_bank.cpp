#include "uel/losses/memory_bank.h"

#include <cmath>

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

// Sum of the entries `keep` marks: masked rather than selected, so no shape depends on data.
at::Tensor sum_where(const at::Tensor& x, const at::Tensor& keep) {
  return x.masked_fill(keep.logical_not(), 0).sum();
}

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
  if (items.numel() == 0 || shard_.size() == 0)
    return;
  const at::Tensor all = items.to(rows_.device(), at::kLong);
  const at::Tensor local = all - shard_.begin;
  const at::Tensor owned = local.ge(0).logical_and(local.lt(shard_.size()));
  const at::Tensor target = local.clamp(0, shard_.size() - 1);
  // winner[row]: the last position naming the row (an item listed twice takes its last feature).
  at::Tensor winner = at::full({shard_.size()}, -1, all.options());
  winner.scatter_reduce_(
      0,
      target,
      at::arange(all.numel(), all.options()).masked_fill(owned.logical_not(), -1),
      "amax");
  const at::Tensor source = winner.index_select(0, target);
  const at::Tensor old = rows_.index_select(0, target);
  at::Tensor mixed =
      old * momentum +
      features.detach().to(rows_.options()).index_select(0, source.clamp_min(0)) * (1 - momentum);
  mixed = mixed / mixed.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
  // Every entry writes its target row's one new value (its old one when no item of the step
  // names it), so repeated targets, unowned entries clamped onto an edge row included, write the
  // same bytes whatever order index_copy_ takes: no compaction, hence no host read.
  rows_.index_copy_(0, target, at::where(source.ge(0).unsqueeze(1), mixed, old));
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
  // Every query's positive score, masked to the queries whose row this rank owns (fixed shapes:
  // selecting them would read their number on the host).
  const at::Tensor local = out.items - shard.begin;
  const at::Tensor owns = local.ge(0).logical_and(local.lt(shard.size()));
  // A rank without rows scores zeros, still from the queries: its backward must reach
  // all_gather_with_grad's reduce-scatter as every other rank's does.
  at::Tensor positive = queries.narrow(1, 0, 0).sum(1);
  if (shard.size() > 0) {
    positive = (queries * rows.index_select(0, local.clamp(0, shard.size() - 1))).sum(1) / t;
  }

  at::Tensor partial;  // this rank's terms; they sum over ranks to the global loss
  if (config.k > 0) {
    UEL_CHECK(
        negatives.dim() == 2 && negatives.size(0) == batch && negatives.size(1) == config.k,
        "bank_loss: negatives must be draw_negatives({}, {}), got {}",
        batch,
        config.k,
        c10::str(negatives.sizes()));
    const at::Tensor all = negatives.to(rows.device());
    const at::Tensor owned = all.ge(shard.begin).logical_and(all.lt(shard.end));
    const bool compact = config.layout == NegativeLayout::kCompact ||
                         (config.layout == NegativeLayout::kAuto && rows.is_cpu());
    // [B, width] local rows to score and which slots hold a negative this rank owns.
    at::Tensor packed, valid;
    if (shard.size() == 0) {
      packed = at::zeros({batch, 0}, all.options());
      valid = at::zeros({batch, 0}, owned.options());
    } else if (compact) {
      // Each query's own negatives packed to the left of its row; width: the most any query
      // owns, about K / P.
      const at::Tensor query = owned.nonzero().select(1, 0);
      const at::Tensor counts = at::bincount(query, {}, batch);
      const int64_t width = query.numel() > 0 ? counts.max().item<int64_t>() : 0;
      const at::Tensor slot = at::arange(query.numel(), query.options()) -
                              (counts.cumsum(0) - counts).index_select(0, query);
      packed = at::zeros({batch, width}, all.options());
      packed.index_put_({query, slot}, all.masked_select(owned) - shard.begin);
      valid = at::arange(width, counts.options()).unsqueeze(0).lt(counts.unsqueeze(1));
    } else {
      packed = (all - shard.begin).masked_fill(owned.logical_not(), 0);
      valid = owned;
    }
    const at::Tensor negative = packed.size(1) > 0 ? GatheredDot::apply(queries, rows, packed) / t
                                                   : at::zeros({batch, 0}, queries.options());
    if (bank.z() < 0 || config.z_momentum > 0) {
      // Z = N * mean(exp(s)) over every score of the step, positives included.
      at::Tensor stats = at::stack(
          {sum_where(at::exp(positive.detach().to(at::kDouble)), owns) +
               sum_where(at::exp(negative.detach().to(at::kDouble)), valid),
           (owns.sum() + valid.sum()).to(at::kDouble)});
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
    partial = -(sum_where(positive_terms, owns) + sum_where(negative_terms, valid)) / batch;
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
    partial = (lse.sum() / world).to(queries.scalar_type()) - sum_where(positive, owns);
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
