#include "uel/eval/knn.h"

#include <ATen/ATen.h>

#include "uel/core/error.h"
#include "uel/eval/top_k.h"

namespace uel::eval {

at::Tensor knn_votes(const TopK& top, int64_t num_classes, double tau) {
  const at::Tensor weights = (top.values / tau).exp();  // exp(-inf) = 0 for padding
  at::Tensor votes = at::zeros({top.values.size(0), num_classes}, top.values.options());
  return votes.scatter_add_(1, top.labels, weights);
}

KnnResult weighted_knn(
    const at::Tensor& train_features,
    const at::Tensor& train_labels,
    const at::Tensor& queries,
    const at::Tensor& query_labels,
    int64_t num_classes,
    const KnnConfig& config,
    comm::Communicator& comm) {
  // The options --eval.knn_k and --eval.knn_tau are checked where they are parsed.
  UEL_CHECK(config.k > 0 && config.tau > 0, "weighted_knn needs k > 0 and tau > 0");
  UEL_CHECK(train_features.dim() == 2 && queries.dim() == 2, "kNN expects [N, D] features");
  KnnResult result;
  result.queries = queries.size(0);
  const TopK top = sharded_top_k(queries, train_features, train_labels, config.k, comm);
  const at::Tensor votes = knn_votes(top, num_classes, config.tau);
  // Top-n hit: the true class got votes and fewer than n classes got more (topk would order
  // tied classes, e.g. the ones without votes, arbitrarily).
  const at::Tensor truth_votes = votes.gather(1, query_labels.to(queries.device()).view({-1, 1}));
  const at::Tensor better = votes.gt(truth_votes).sum(1);
  const at::Tensor voted = truth_votes.squeeze(1).gt(0);
  const int64_t correct1 = (voted & better.eq(0)).sum().item<int64_t>();
  const int64_t correct5 = (voted & better.lt(5)).sum().item<int64_t>();
  if (result.queries > 0) {
    result.top1 = 100.0 * correct1 / result.queries;
    result.top5 = 100.0 * correct5 / result.queries;
  }
  return result;
}

}  // namespace uel::eval
