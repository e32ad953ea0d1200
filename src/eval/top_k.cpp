#include "uel/eval/top_k.h"

#include <algorithm>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "uel/core/error.h"

namespace uel::eval {
namespace {

// Similarity entries per query block ([block, n_r]): bounds memory whatever the gallery size.
constexpr int64_t kBlockEntries = int64_t{1} << 26;
constexpr int64_t kMaxBlock = 1024;

// Columns of the k largest values of every row, ties to the earlier column, in column order.
// topk alone picks among tied values in no defined order.
at::Tensor first_top_k(const at::Tensor& values, int64_t k) {
  const at::Tensor kth = std::get<0>(values.topk(k, 1)).narrow(1, k - 1, 1);
  const at::Tensor above = values > kth;
  const at::Tensor tied = values == kth;
  const at::Tensor wanted = k - above.sum(1, true);
  const at::Tensor take = above | (tied & (tied.cumsum(1) <= wanted));
  return take.nonzero().select(1, 1).view({values.size(0), k});
}

}  // namespace

TopK sharded_top_k(
    const at::Tensor& queries,
    const at::Tensor& gallery,
    const at::Tensor& gallery_labels,
    int64_t k,
    comm::Communicator& comm,
    const at::Tensor& exclude) {
  UEL_CHECK(k > 0, "top-k needs k > 0, got {}", k);
  UEL_CHECK(
      queries.dim() == 2 && gallery.dim() == 2 && queries.size(1) == gallery.size(1),
      "top-k expects queries [nq, D] and gallery [n, D] of one D");
  const auto device = queries.device();
  const int64_t nq = queries.size(0), n = gallery.size(0);
  const bool with_labels = gallery_labels.defined();
  // Every rank's row count: the global row of local row 0, and one block size for all ranks.
  const at::Tensor counts = comm.all_gather(at::full({1}, n, at::kLong).to(comm.device())).cpu();
  const int64_t offset = counts.narrow(0, 0, comm.rank()).sum().item<int64_t>();
  const int64_t block = std::clamp<int64_t>(
      kBlockEntries / std::max<int64_t>(1, counts.max().item<int64_t>()), 1, kMaxBlock);
  const int64_t local_k = std::min(k, n);
  const int64_t world = comm.size();
  const auto long_options = queries.options().dtype(at::kLong);
  const at::Tensor labels_here = with_labels ? gallery_labels.to(device) : at::Tensor();
  constexpr float kNone = -std::numeric_limits<float>::infinity();

  TopK out{
      at::empty({nq, k}, queries.options()),
      at::empty({nq, k}, long_options),
      at::empty({nq, k}, long_options)};
  for (int64_t begin = 0; begin < nq; begin += block) {
    const int64_t end = std::min(nq, begin + block), rows = end - begin;
    at::Tensor values = at::full({rows, k}, kNone, queries.options());
    at::Tensor index = at::full({rows, k}, -1, long_options);
    at::Tensor labels = at::zeros({rows, k}, long_options);
    if (local_k > 0) {
      at::Tensor sims = queries.slice(0, begin, end).matmul(gallery.t());
      if (exclude.defined()) {
        const at::Tensor local = exclude.slice(0, begin, end).to(device) - offset;
        const at::Tensor hit = ((local >= 0) & (local < n)).nonzero().squeeze(1);
        sims.index_put_({hit, local.index_select(0, hit)}, kNone);
      }
      const at::Tensor columns = first_top_k(sims, local_k);
      values.narrow(1, 0, local_k).copy_(sims.gather(1, columns));
      index.narrow(1, 0, local_k).copy_(columns + offset);
      if (with_labels)
        labels.narrow(1, 0, local_k)
            .copy_(labels_here.index_select(0, columns.flatten()).view_as(columns));
    }
    // An excluded row can be among the candidates of a small shard: it counts as padding.
    const at::Tensor none = values == kNone;
    index.masked_fill_(none, -1);
    labels.masked_fill_(none, 0);
    // Candidates side by side in rank order: their columns follow the global row order.
    auto side_by_side = [&](const at::Tensor& t) {
      return comm.all_gather(t.to(comm.device()))
          .to(device)
          .view({world, rows, k})
          .permute({1, 0, 2})
          .reshape({rows, world * k});
    };
    const at::Tensor all_values = side_by_side(values);
    const at::Tensor all_index = side_by_side(index);
    const at::Tensor chosen = first_top_k(all_values, k);
    // Descending; the stable sort keeps tied values in global order.
    const at::Tensor order = std::get<1>(all_values.gather(1, chosen).sort(true, 1, true));
    const at::Tensor picked = chosen.gather(1, order);
    out.values.slice(0, begin, end).copy_(all_values.gather(1, picked));
    out.indices.slice(0, begin, end).copy_(all_index.gather(1, picked));
    if (with_labels)
      out.labels.slice(0, begin, end).copy_(side_by_side(labels).gather(1, picked));
  }
  if (!with_labels)
    out.labels = at::Tensor();
  return out;
}

}  // namespace uel::eval
