#include "uel/eval/knn.h"

#include <limits>

#include <ATen/ATen.h>

#include "uel/core/error.h"

namespace uel::eval {

KnnResult weighted_knn(
    const at::Tensor& train_features,
    const at::Tensor& train_labels,
    const at::Tensor& queries,
    const at::Tensor& query_labels,
    int64_t num_classes,
    const KnnConfig& config,
    comm::Communicator& comm) {
  UEL_CHECK_CONFIG(config.k > 0, "--eval.knn_k must be positive, got {}", config.k);
  UEL_CHECK_CONFIG(config.tau > 0, "--eval.knn_tau must be positive, got {}", config.tau);
  UEL_CHECK(train_features.dim() == 2 && queries.dim() == 2, "kNN expects [N, D] features");
  const int64_t k = config.k;
  const int64_t local_k = std::min(k, train_features.size(0));
  const int64_t world = comm.size();
  const auto device = queries.device();
  KnnResult result;
  result.queries = queries.size(0);
  int64_t correct1 = 0, correct5 = 0;
  // Query blocks bound the similarity matrix ([block, n_r]) whatever the dataset size.
  constexpr int64_t kBlock = 1024;
  for (int64_t begin = 0; begin < queries.size(0); begin += kBlock) {
    const int64_t end = std::min(queries.size(0), begin + kBlock);
    const int64_t nq = end - begin;
    at::Tensor values =
        at::full({nq, k}, -std::numeric_limits<float>::infinity(), queries.options());
    at::Tensor labels = at::zeros({nq, k}, queries.options().dtype(at::kLong));
    if (local_k > 0) {
      at::Tensor sims = queries.slice(0, begin, end).matmul(train_features.t());
      auto [top, index] = sims.topk(local_k, 1);
      values.narrow(1, 0, local_k).copy_(top);
      labels.narrow(1, 0, local_k)
          .copy_(train_labels.to(device).index_select(0, index.flatten()).view({nq, local_k}));
    }
    // Merge: every rank's candidates side by side, then the global top-K among them.
    at::Tensor all_values =
        comm.all_gather(values).view({world, nq, k}).permute({1, 0, 2}).reshape({nq, world * k});
    at::Tensor all_labels =
        comm.all_gather(labels).view({world, nq, k}).permute({1, 0, 2}).reshape({nq, world * k});
    auto [best, where] = all_values.topk(k, 1);
    at::Tensor weights = (best / config.tau).exp();  // exp(-inf) = 0 for padding
    at::Tensor votes = at::zeros({nq, num_classes}, queries.options());
    votes.scatter_add_(1, all_labels.gather(1, where), weights);
    at::Tensor ranked = std::get<1>(votes.topk(std::min<int64_t>(5, num_classes), 1));
    at::Tensor truth = query_labels.slice(0, begin, end).to(device).view({nq, 1});
    at::Tensor hits = ranked.eq(truth);
    correct1 += hits.narrow(1, 0, 1).sum().item<int64_t>();
    correct5 += hits.any(1).sum().item<int64_t>();
  }
  if (result.queries > 0) {
    result.top1 = 100.0 * correct1 / result.queries;
    result.top5 = 100.0 * correct5 / result.queries;
  }
  return result;
}

}  // namespace uel::eval
