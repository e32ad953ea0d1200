// Distributed k-means on 1, 2 and 4 ranks: recovered blobs, brute-force checks of the returned
// assignments and inertia, the same centroids as one process holding every row (any world size,
// a rank with no rows), warm start, empty-cluster re-seeding, spherical k-means, CUDA tensors.

#include <torch/cuda.h>
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "shards.h"
#include "test_util.h"
#include "uel/cluster/kmeans.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/core/shard.h"

namespace uel::cluster {
namespace {

std::unique_ptr<comm::Communicator> cpu_comm() {
  return comm::make_communicator("auto", c10::Device(c10::kCPU));
}

struct Blobs {
  at::Tensor x;       // [N, D] float64, the same on every rank
  at::Tensor labels;  // [N]
  at::Tensor centers;
};

// Blob centres, the same on every rank.
at::Tensor random_centers(int64_t count, int64_t dim, double scale) {
  torch::manual_seed(7);
  return scale * torch::randn({count, dim}, torch::kDouble);
}

// Gaussian blobs around `centers` with `sizes` rows each, rows shuffled so every shard mixes them.
Blobs make_blobs(const at::Tensor& centers, const std::vector<int64_t>& sizes, double spread) {
  torch::manual_seed(11);
  std::vector<at::Tensor> xs, ls;
  for (size_t c = 0; c < sizes.size(); ++c) {
    xs.push_back(centers[c] + spread * torch::randn({sizes[c], centers.size(1)}, torch::kDouble));
    ls.push_back(torch::full({sizes[c]}, static_cast<int64_t>(c), torch::kLong));
  }
  const at::Tensor order = torch::randperm(torch::cat(ls).size(0), torch::kLong);
  return {torch::cat(xs).index_select(0, order), torch::cat(ls).index_select(0, order), centers};
}

// Brute force on every row: each row's nearest centroid and the inertia of the assignments.
void expect_consistent(const at::Tensor& x, const KMeansResult& r, comm::Communicator& comm) {
  const at::Tensor assigned = comm.all_gather_v(r.assignments);
  const at::Tensor c = r.centroids.to(torch::kDouble);
  const at::Tensor d2 = torch::cdist(x, c).pow(2);
  EXPECT_TRUE(torch::equal(assigned, d2.argmin(1)));
  const double inertia = d2.gather(1, assigned.unsqueeze(1)).sum().item<double>();
  EXPECT_NEAR(r.inertia, inertia, 1e-9 * inertia);
  EXPECT_TRUE(torch::equal(r.counts, torch::bincount(assigned, {}, c.size(0))));
}

// The distributed result equals one process's on all rows (world-size invariance).
void expect_same(
    const KMeansResult& distributed, const KMeansResult& single, comm::Communicator& comm) {
  EXPECT_LE((distributed.centroids - single.centroids).abs().max().item<double>(), 1e-10);
  EXPECT_NEAR(distributed.inertia, single.inertia, 1e-10 * single.inertia);
  EXPECT_EQ(distributed.iterations, single.iterations);
  EXPECT_EQ(distributed.empty_reseeded, single.empty_reseeded);
  EXPECT_TRUE(torch::equal(comm.all_gather_v(distributed.assignments), single.assignments));
}

TEST(KMeans, RecoversSeparatedBlobs) {
  auto comm = cpu_comm();
  const at::Tensor centers = torch::tensor(
      {{10.0, 0.0, 0.0}, {-10.0, 0.0, 0.0}, {0.0, 10.0, 0.0}, {0.0, 0.0, -10.0}}, torch::kDouble);
  const Blobs blobs = make_blobs(centers, {150, 120, 90, 60}, 1.0);
  KMeansConfig config;
  config.k = 4;
  config.seed = 3;
  const KMeansResult r = kmeans(test::even_split(blobs.x, *comm), config, *comm);
  expect_consistent(blobs.x, r, *comm);
  // Each blob is one cluster and each cluster one blob, near the blob's centre.
  const at::Tensor assigned = comm->all_gather_v(r.assignments);
  for (int64_t c = 0; c < 4; ++c) {
    const at::Tensor mine = assigned.index({blobs.labels == c});
    const int64_t cluster = mine[0].item<int64_t>();
    EXPECT_TRUE(torch::all(mine == cluster).item<bool>()) << "blob " << c << " is split";
    EXPECT_EQ(r.counts[cluster].item<int64_t>(), mine.size(0));
    EXPECT_LT((r.centroids[cluster] - centers[c]).norm().item<double>(), 0.5);
  }
  EXPECT_EQ(r.empty_reseeded, 0);
  EXPECT_EQ(r.centroids.scalar_type(), torch::kDouble);
}

TEST(KMeans, SameSeedSameCentroidsOnAnyWorldSize) {
  auto comm = cpu_comm();
  comm::LocalCommunicator alone;
  // Overlapping blobs: the result depends on every draw of the initialisation.
  const Blobs blobs = make_blobs(random_centers(5, 6, 1), {80, 61, 70, 50, 40}, 1.0);
  for (const std::string init : {"kmeans++", "random"}) {
    for (const std::string metric : {"euclidean", "cosine"}) {
      SCOPED_TRACE(init + " " + metric);
      KMeansConfig config;
      config.k = 7;
      config.init = init;
      config.metric = metric;
      config.n_init = 3;
      config.seed = 42;
      const KMeansResult single = kmeans(blobs.x, config, alone);
      expect_same(kmeans(test::even_split(blobs.x, *comm), config, *comm), single, *comm);
      expect_same(kmeans(test::last_rank_empty(blobs.x, *comm), config, *comm), single, *comm);
    }
  }
}

TEST(KMeans, FloatFeaturesMatchFloat64) {
  auto comm = cpu_comm();
  const Blobs blobs = make_blobs(random_centers(4, 8, 5), {50, 50, 50, 50}, 1.0);
  KMeansConfig config;
  config.k = 4;
  config.seed = 1;
  const KMeansResult f64 = kmeans(test::even_split(blobs.x, *comm), config, *comm);
  const KMeansResult f32 =
      kmeans(test::even_split(blobs.x.to(torch::kFloat), *comm), config, *comm);
  EXPECT_EQ(f32.centroids.scalar_type(), torch::kFloat);
  EXPECT_LE((f32.centroids.to(torch::kDouble) - f64.centroids).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(torch::equal(f32.assignments, f64.assignments));
  EXPECT_NEAR(f32.inertia, f64.inertia, 1e-5 * f64.inertia);
}

TEST(KMeans, WarmStartFromConvergedCentroidsTakesOneIteration) {
  auto comm = cpu_comm();
  const Blobs blobs = make_blobs(random_centers(6, 4, 3), {40, 40, 40, 40, 40, 40}, 1.0);
  KMeansConfig config;
  config.k = 6;
  config.tol = 0;  // converged = no centroid moves at all
  const at::Tensor x = test::even_split(blobs.x, *comm);
  const KMeansResult first = kmeans(x, config, *comm);
  ASSERT_LT(first.iterations, config.max_iter);
  const KMeansResult again = kmeans(x, config, *comm, first.centroids);
  EXPECT_EQ(again.iterations, 1);
  EXPECT_TRUE(torch::equal(again.centroids, first.centroids));
  EXPECT_TRUE(torch::equal(again.assignments, first.assignments));
}

TEST(KMeans, EmptyClusterSplitsTheLargestDeterministically) {
  auto comm = cpu_comm();
  comm::LocalCommunicator alone;
  const at::Tensor centers = torch::tensor({{0.0, 0.0, 0.0}, {20.0, 0.0, 0.0}}, torch::kDouble);
  const Blobs blobs = make_blobs(centers, {300, 100}, 1.0);
  // A bad warm start: the third centroid is far from every row, so it starts empty.
  const at::Tensor start =
      torch::tensor({{1.0, 0.0, 0.0}, {19.0, 0.0, 0.0}, {1e3, 1e3, 1e3}}, torch::kDouble);
  KMeansConfig config;
  config.k = 3;
  const KMeansResult r = kmeans(test::even_split(blobs.x, *comm), config, *comm, start);
  EXPECT_GE(r.empty_reseeded, 1);
  EXPECT_TRUE(torch::all(r.counts > 0).item<bool>());
  expect_consistent(blobs.x, r, *comm);
  // The large blob is the one split in two; the small one keeps its cluster.
  const at::Tensor near_origin = r.centroids.norm(2, 1) < 3;
  EXPECT_EQ(near_origin.sum().item<int64_t>(), 2);
  expect_same(r, kmeans(blobs.x, config, alone, start), *comm);
}

TEST(KMeans, FewerDistinctRowsThanClusters) {
  auto comm = cpu_comm();
  comm::LocalCommunicator alone;
  const at::Tensor points = torch::tensor({{1.0, 2.0}, {-3.0, 0.5}, {4.0, -4.0}}, torch::kDouble);
  const at::Tensor x = points.repeat({20, 1});
  KMeansConfig config;
  config.k = 5;
  const KMeansResult r = kmeans(test::even_split(x, *comm), config, *comm);
  // Every row keeps a centroid on its point, up to the split perturbation of duplicates.
  const at::Tensor assigned = comm->all_gather_v(r.assignments);
  EXPECT_LT((r.centroids.index_select(0, assigned) - x).abs().max().item<double>(), 0.01);
  EXPECT_EQ(r.counts.sum().item<int64_t>(), x.size(0));
  expect_same(r, kmeans(x, config, alone), *comm);
}

TEST(KMeans, CosineCentroidsAreUnitVectors) {
  auto comm = cpu_comm();
  // Directions as blobs; row norms vary, which spherical k-means must ignore.
  const at::Tensor directions = torch::tensor(
      {{1.0, 0.0, 0.0, 0.0}, {0.0, 1.0, 0.0, 0.0}, {0.0, 0.0, 0.0, 1.0}}, torch::kDouble);
  Blobs blobs = make_blobs(directions, {70, 50, 30}, 0.1);
  blobs.x = blobs.x * torch::rand({blobs.x.size(0), 1}, torch::kDouble).mul(4).add(1);
  KMeansConfig config;
  config.k = 3;
  config.metric = "cosine";
  const KMeansResult r = kmeans(test::even_split(blobs.x, *comm), config, *comm);
  EXPECT_LE((r.centroids.norm(2, 1) - 1).abs().max().item<double>(), 1e-12);
  const at::Tensor assigned = comm->all_gather_v(r.assignments);
  const at::Tensor unit = blobs.x / blobs.x.norm(2, 1, true);
  const at::Tensor cos = unit.matmul(r.centroids.t());
  EXPECT_TRUE(torch::equal(assigned, cos.argmax(1)));
  const double inertia = (1 - cos.gather(1, assigned.unsqueeze(1))).sum().item<double>();
  EXPECT_NEAR(r.inertia, inertia, 1e-9);
  for (int64_t c = 0; c < 3; ++c) {
    const at::Tensor mine = assigned.index({blobs.labels == c});
    EXPECT_TRUE(torch::all(mine == mine[0]).item<bool>());
  }
}

TEST(KMeans, BadInputsNameTheFix) {
  auto comm = cpu_comm();
  const at::Tensor x = test::even_split(random_centers(10, 3, 1), *comm);
  KMeansConfig config;
  config.k = 11;
  EXPECT_THROW_WITH(kmeans(x, config, *comm), DataError, "lower k");
  config.k = 2;
  config.metric = "manhattan";
  EXPECT_THROW_WITH(kmeans(x, config, *comm), ConfigError, "use euclidean or cosine");
  config.metric = "euclidean";
  EXPECT_THROW_WITH(
      kmeans(x, config, *comm, torch::zeros({3, 3}, torch::kDouble)),
      ConfigError,
      "[k = 2, D = 3]");
}

TEST(KMeans, MatchesCpu_cuda) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no usable CUDA device";
  const c10::Device device = comm::select_device("cuda", /*share_gpus=*/true);
  auto comm = comm::make_communicator(comm::world().size == 1 ? "local" : "mpi", device);
  auto cpu = cpu_comm();
  const Blobs blobs = make_blobs(random_centers(5, 16, 3), {100, 90, 80, 70, 60}, 1.0);
  for (const std::string metric : {"euclidean", "cosine"}) {
    KMeansConfig config;
    config.k = 5;
    config.metric = metric;
    const at::Tensor x = test::even_split(blobs.x, *cpu);
    const KMeansResult on_gpu = kmeans(x.to(device), config, *comm);
    const KMeansResult on_cpu = kmeans(x, config, *cpu);
    EXPECT_TRUE(on_gpu.centroids.is_cuda());
    EXPECT_LE((on_gpu.centroids.cpu() - on_cpu.centroids).abs().max().item<double>(), 1e-9);
    EXPECT_TRUE(torch::equal(on_gpu.assignments.cpu(), on_cpu.assignments));
  }
}

}  // namespace
}  // namespace uel::cluster
