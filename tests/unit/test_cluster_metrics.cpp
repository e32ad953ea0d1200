// NMI and ARI against values computed by hand (and quoted in sklearn's documentation).

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/eval/cluster_metrics.h"

namespace uel::eval {
namespace {

at::Tensor ids(std::vector<int64_t> v) {
  return torch::tensor(v, torch::kLong);
}

TEST(ClusterMetrics, HandComputedContingency) {
  // Labels {0,0 | 1,1}, clusters {0,0 | 1 | 2}: MI = ln 2, H(labels) = ln 2, H(clusters) =
  // 1.5 ln 2, so NMI = ln 2 / 1.25 ln 2 = 0.8. Pairs: 1 together in both, 1 only in the labels,
  // 0 only in the clusters, 4 in neither: ARI = 2 (1*4 - 1*0) / (2*5 + 1*4) = 4/7.
  EXPECT_NEAR(nmi(ids({0, 0, 1, 1}), ids({0, 0, 1, 2})), 0.8, 1e-12);
  EXPECT_NEAR(ari(ids({0, 0, 1, 1}), ids({0, 0, 1, 2})), 4.0 / 7.0, 1e-12);
  // Every pair split the other way: MI = 0, ARI = -0.5 (below chance).
  EXPECT_NEAR(nmi(ids({0, 0, 1, 1}), ids({0, 1, 0, 1})), 0.0, 1e-12);
  EXPECT_NEAR(ari(ids({0, 0, 1, 1}), ids({0, 1, 0, 1})), -0.5, 1e-12);
}

TEST(ClusterMetrics, RenamedClustersScoreOne) {
  const at::Tensor labels = ids({0, 0, 1, 1, 2, 2, 2});
  const at::Tensor renamed = ids({7, 7, -3, -3, 40, 40, 40});
  EXPECT_NEAR(nmi(labels, renamed), 1.0, 1e-12);
  EXPECT_NEAR(ari(labels, renamed), 1.0, 1e-12);
  EXPECT_NEAR(nmi(renamed, labels), 1.0, 1e-12);
}

TEST(ClusterMetrics, DegenerateGroupings) {
  // One group on both sides: a perfect match (sklearn's convention).
  EXPECT_EQ(nmi(ids({3, 3, 3}), ids({1, 1, 1})), 1.0);
  EXPECT_EQ(ari(ids({3, 3, 3}), ids({1, 1, 1})), 1.0);
  // One cluster for two classes tells nothing.
  EXPECT_EQ(nmi(ids({0, 0, 1, 1}), ids({0, 0, 0, 0})), 0.0);
  EXPECT_EQ(ari(ids({0, 0, 1, 1}), ids({0, 0, 0, 0})), 0.0);
}

TEST(ClusterMetrics, IndependentLabellingsScoreNearZero) {
  torch::manual_seed(0);
  const at::Tensor a = torch::randint(10, {200000}, torch::kLong);
  const at::Tensor b = torch::randint(10, {200000}, torch::kLong);
  EXPECT_LT(nmi(a, b), 1e-3);
  EXPECT_NEAR(ari(a, b), 0.0, 1e-3);
}

TEST(ClusterMetrics, LengthsMustAgree) {
  EXPECT_THROW_WITH(nmi(ids({0, 1}), ids({0})), Error, "2 labels for 1 cluster assignments");
}

}  // namespace
}  // namespace uel::eval
