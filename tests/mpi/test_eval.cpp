// The sharded top-K merge, weighted kNN and Recall@K on 1, 2 and 4 ranks against brute force
// over the whole gallery in one process (plain loops and std::stable_sort): tied similarities
// (ties go to the earlier gallery row), fewer gallery rows than K, a rank holding no rows.

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "shards.h"
#include "uel/comm/world.h"
#include "uel/eval/knn.h"
#include "uel/eval/recall.h"
#include "uel/eval/top_k.h"

namespace uel::eval {
namespace {

std::unique_ptr<comm::Communicator> cpu_comm() {
  return comm::make_communicator("auto", c10::Device(c10::kCPU));
}

using Split = std::function<at::Tensor(const at::Tensor&, const comm::Communicator&)>;

const std::vector<std::pair<const char*, Split>>& splits() {
  static const std::vector<std::pair<const char*, Split>> all = {
      {"even", test::even_split}, {"last rank empty", test::last_rank_empty}};
  return all;
}

// Small integer features: every inner product is exact, and many tie.
at::Tensor tied_features(int64_t n, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(-2, 3, {n, 3}, torch::kFloat);
}

at::Tensor unit_features(int64_t n, int64_t dim, int64_t seed) {
  torch::manual_seed(seed);
  at::Tensor x = torch::randn({n, dim}, torch::kFloat);
  return x / x.norm(2, 1, true);
}

at::Tensor random_labels(int64_t n, int64_t classes, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(classes, {n}, torch::kLong);
}

// Brute force: gallery rows by similarity, descending, ties by row; `skip` (or -1) left out.
std::vector<int64_t> ranking(const at::Tensor& gallery, const at::Tensor& query, int64_t skip) {
  const at::Tensor sims = gallery.to(torch::kDouble).matmul(query.to(torch::kDouble));
  std::vector<int64_t> rows;
  for (int64_t j = 0; j < gallery.size(0); ++j) {
    if (j != skip)
      rows.push_back(j);
  }
  const auto s = sims.accessor<double, 1>();
  std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
  return rows;
}

TEST(TopK, MatchesBruteForceWithTiesAndPadding) {
  auto comm = cpu_comm();
  const at::Tensor gallery = tied_features(37, 1);
  const at::Tensor labels = random_labels(37, 5, 2);
  const at::Tensor queries = tied_features(13, 3);
  // Each query skips one row; -1: none.
  const at::Tensor exclude = torch::arange(13, torch::kLong).mul(3).sub(1);
  for (const auto& [name, split] : splits()) {
    for (const int64_t k : {1, 4, 10, 50}) {  // 50 > 37 rows: padding
      SCOPED_TRACE(std::string(name) + " k=" + std::to_string(k));
      const TopK top =
          sharded_top_k(queries, split(gallery, *comm), split(labels, *comm), k, *comm, exclude);
      ASSERT_EQ(top.values.sizes(), (std::vector<int64_t>{13, k}));
      for (int64_t q = 0; q < 13; ++q) {
        const auto rows = ranking(gallery, queries[q], exclude[q].item<int64_t>());
        for (int64_t j = 0; j < k; ++j) {
          if (j < static_cast<int64_t>(rows.size())) {
            const int64_t row = rows[j];
            EXPECT_EQ(top.indices[q][j].item<int64_t>(), row) << "query " << q << " rank " << j;
            EXPECT_EQ(top.labels[q][j].item<int64_t>(), labels[row].item<int64_t>());
            EXPECT_EQ(top.values[q][j].item<float>(), gallery[row].dot(queries[q]).item<float>());
          } else {
            EXPECT_EQ(top.indices[q][j].item<int64_t>(), -1);
            EXPECT_EQ(top.values[q][j].item<float>(), -std::numeric_limits<float>::infinity());
          }
        }
      }
    }
  }
}

// Brute-force weighted kNN: top-1 and top-5 accuracy in percent.
std::pair<double, double> knn_brute_force(
    const at::Tensor& train,
    const at::Tensor& train_labels,
    const at::Tensor& queries,
    const at::Tensor& query_labels,
    int64_t classes,
    int64_t k,
    double tau) {
  int64_t top1 = 0, top5 = 0;
  for (int64_t q = 0; q < queries.size(0); ++q) {
    const auto rows = ranking(train, queries[q], -1);
    std::vector<double> votes(classes, 0.0);
    for (int64_t j = 0; j < std::min<int64_t>(k, rows.size()); ++j) {
      votes[train_labels[rows[j]].item<int64_t>()] +=
          std::exp(train[rows[j]].dot(queries[q]).item<float>() / tau);
    }
    const int64_t truth = query_labels[q].item<int64_t>();
    int64_t better = 0;  // classes with more votes than the truth
    for (const double v : votes)
      better += v > votes[truth];
    const bool voted = votes[truth] > 0;
    top1 += voted && better == 0;
    top5 += voted && better < 5;
  }
  const double n = static_cast<double>(queries.size(0));
  return {100.0 * top1 / n, 100.0 * top5 / n};
}

// weighted_knn over every split of the gallery equals the brute force, for each k.
void expect_knn_matches_brute_force(
    const at::Tensor& train,
    const at::Tensor& train_labels,
    const at::Tensor& queries,
    const at::Tensor& query_labels,
    int64_t classes,
    const std::vector<int64_t>& ks,
    double tau) {
  auto comm = cpu_comm();
  for (const auto& [name, split] : splits()) {
    for (const int64_t k : ks) {
      SCOPED_TRACE(std::string(name) + " k=" + std::to_string(k));
      KnnConfig config;
      config.k = k;
      config.tau = tau;
      const KnnResult r = weighted_knn(
          split(train, *comm),
          split(train_labels, *comm),
          queries,
          query_labels,
          classes,
          config,
          *comm);
      const auto [top1, top5] =
          knn_brute_force(train, train_labels, queries, query_labels, classes, k, tau);
      EXPECT_DOUBLE_EQ(r.top1, top1);
      EXPECT_DOUBLE_EQ(r.top5, top5);
      EXPECT_EQ(r.queries, queries.size(0));
    }
  }
}

TEST(WeightedKnn, MatchesBruteForce) {
  const int64_t classes = 8;
  const at::Tensor train = unit_features(90, 6, 4);
  const at::Tensor queries = unit_features(25, 6, 6);
  expect_knn_matches_brute_force(
      train,
      random_labels(90, classes, 5),
      queries,
      random_labels(25, classes, 7),
      classes,
      {1, 7, 30, 200},  // 200 > 90 rows
      KnnConfig().tau);
}

TEST(WeightedKnn, MatchesBruteForceWithTiedSimilarities) {
  const int64_t classes = 4;
  // Integer features: similarities tie at the K boundary and classes tie in votes. tau = 4 keeps
  // exp(s / tau) of |s| <= 12 well inside float32.
  expect_knn_matches_brute_force(
      tied_features(45, 10),
      random_labels(45, classes, 11),
      tied_features(20, 12),
      random_labels(20, classes, 13),
      classes,
      {1, 5, 16, 60},  // 60 > 45 rows: padding, N < K
      4);
}

TEST(WeightedKnn, ClassesTiedInVotesAllCountAsTopOne) {
  auto comm = cpu_comm();
  // The query is as close to row 0 (class 1) as to row 1 (class 2): with k = 2 both classes get
  // the same votes, and either truth is a top-1 hit.
  const at::Tensor train = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {-1.0f, 0.0f}});
  const at::Tensor train_labels = torch::tensor({1, 2, 0}, torch::kLong);
  const at::Tensor queries = torch::tensor({{0.6f, 0.6f}, {0.6f, 0.6f}, {0.6f, 0.6f}});
  KnnConfig config;
  config.k = 2;
  for (const auto& [name, split] : splits()) {
    const KnnResult r = weighted_knn(
        split(train, *comm),
        split(train_labels, *comm),
        queries,
        torch::tensor({1L, 2L, 0L}),
        3,
        config,
        *comm);
    EXPECT_NEAR(r.top1, 200.0 / 3, 1e-9) << name;  // class 0 got no vote
  }
}

TEST(WeightedKnn, TiesGoToTheEarlierRow) {
  auto comm = cpu_comm();
  // Rows 0 and 1 are the same point with different labels: k = 1 votes for row 0's label.
  const at::Tensor train = torch::tensor({{1.0f, 0.0f}, {1.0f, 0.0f}, {0.0f, 1.0f}});
  const at::Tensor train_labels = torch::tensor({2, 1, 0}, torch::kLong);
  const at::Tensor queries = torch::tensor({{1.0f, 0.1f}});
  KnnConfig config;
  config.k = 1;
  for (const auto& [name, split] : splits()) {
    const KnnResult r = weighted_knn(
        split(train, *comm),
        split(train_labels, *comm),
        queries,
        torch::tensor({2L}),
        3,
        config,
        *comm);
    EXPECT_EQ(r.top1, 100.0) << name;
  }
}

// Brute-force Recall@K with the test set as queries and gallery, self excluded.
std::vector<double> recall_brute_force(
    const at::Tensor& x, const at::Tensor& labels, const std::vector<int64_t>& ks) {
  std::vector<double> hits(ks.size(), 0);
  for (int64_t q = 0; q < x.size(0); ++q) {
    const auto rows = ranking(x, x[q], q);
    for (size_t i = 0; i < ks.size(); ++i) {
      for (int64_t j = 0; j < std::min<int64_t>(ks[i], rows.size()); ++j) {
        if (labels[rows[j]].item<int64_t>() == labels[q].item<int64_t>()) {
          hits[i] += 1;
          break;
        }
      }
    }
  }
  for (auto& h : hits)
    h = 100.0 * h / x.size(0);
  return hits;
}

TEST(Recall, MatchesBruteForce) {
  auto comm = cpu_comm();
  const std::vector<int64_t> ks = {1, 2, 4, 8, 64};  // 64 > 41 - 1 other rows
  struct Case {
    const char* name;
    at::Tensor x;
  };
  for (const Case& c :
       {Case{"ties", tied_features(41, 8)}, Case{"unit", unit_features(41, 5, 9)}}) {
    const at::Tensor labels = random_labels(41, 6, 10);
    const std::vector<double> expected = recall_brute_force(c.x, labels, ks);
    for (const auto& [name, split] : splits()) {
      SCOPED_TRACE(std::string(c.name) + " " + name);
      const RecallResult r = recall_at_k(split(c.x, *comm), split(labels, *comm), ks, *comm);
      EXPECT_EQ(r.ks, ks);
      EXPECT_EQ(r.queries, 41);
      ASSERT_EQ(r.recall.size(), ks.size());
      for (size_t i = 0; i < ks.size(); ++i)
        EXPECT_DOUBLE_EQ(r.recall[i], expected[i]) << "K=" << ks[i];
    }
  }
}

TEST(Recall, SelfIsNeverItsOwnNeighbour) {
  auto comm = cpu_comm();
  // Every label is unique: without self-exclusion each query would find itself at rank 1.
  const at::Tensor x = unit_features(9, 4, 11);
  const RecallResult r = recall_at_k(
      test::even_split(x, *comm),
      test::even_split(torch::arange(9, torch::kLong), *comm),
      {1, 8},
      *comm);
  EXPECT_EQ(r.recall, (std::vector<double>{0.0, 0.0}));
}

}  // namespace
}  // namespace uel::eval
