#include "uel/eval/recall.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include "uel/core/error.h"
#include "uel/eval/top_k.h"

namespace uel::eval {

RecallResult recall_at_k(
    const at::Tensor& gallery,
    const at::Tensor& gallery_labels,
    const at::Tensor& queries,
    const at::Tensor& query_labels,
    const at::Tensor& exclude,
    const std::vector<int64_t>& ks,
    comm::Communicator& comm) {
  UEL_CHECK_CONFIG(
      !ks.empty() && *std::min_element(ks.begin(), ks.end()) > 0,
      "Recall@K needs positive K values, got [{}]",
      fmt::join(ks, ", "));
  const int64_t max_k = *std::max_element(ks.begin(), ks.end());
  const TopK top = sharded_top_k(queries, gallery, gallery_labels, max_k, comm, exclude);
  const at::Tensor same =
      top.labels.eq(query_labels.to(queries.device()).view({-1, 1})) & top.indices.ge(0);
  // found[q][j]: a same-label item is among the first j + 1.
  const at::Tensor found = same.cumsum(1).gt(0);
  RecallResult result;
  result.ks = ks;
  result.queries = queries.size(0);
  for (const int64_t k : ks) {
    const int64_t hits = found.select(1, k - 1).sum().item<int64_t>();
    result.recall.push_back(result.queries > 0 ? 100.0 * hits / result.queries : 0.0);
  }
  return result;
}

RecallResult recall_at_k(
    const at::Tensor& local_features,
    const at::Tensor& local_labels,
    const std::vector<int64_t>& ks,
    comm::Communicator& comm) {
  const auto device = local_features.device();
  const at::Tensor queries = comm.all_gather_v(local_features.to(comm.device())).to(device);
  const at::Tensor labels = comm.all_gather_v(local_labels.to(comm.device())).to(device);
  // Query i is global gallery row i: it must not find itself.
  const at::Tensor itself = at::arange(queries.size(0), labels.options());
  return recall_at_k(local_features, local_labels, queries, labels, itself, ks, comm);
}

}  // namespace uel::eval
