#pragma once

// Distributed k-means (DESIGN.md §3): the features stay on their rank and are never gathered.
// The global row order is the ranks' rows concatenated in rank order (what contiguous
// shard_range shards give), and every random draw is keyed by that global order, so a seed gives
// the same centroids on any world size up to float summation order.
//
// - Initialisation: "kmeans++" is sklearn's greedy k-means++ (2 + ln k candidates drawn by D^2
//   sampling per centre, the one that lowers the potential most is kept); "random" takes k
//   distinct rows. Each draw locates its row through the per-rank sums of the weights, and the
//   owning rank contributes the row to one all-reduce.
// - Lloyd steps: block-wise assignment by ||x||^2 - 2 x.c + ||c||^2, then one all-reduce of the
//   float64 per-cluster sums, counts and inertia.
// - Convergence as sklearn's KMeans: stop when the squared centroid shift summed over clusters is
//   at most tol * (mean per-feature variance of the data); `iterations` counts Lloyd steps.
// - An empty cluster takes half of the largest one: both get that centroid moved by a small
//   opposite perturbation (FAISS's split), so the next assignment separates them.
// - "cosine" is spherical k-means: rows are L2-normalised, centroids are unit vectors,
//   assignment is by the largest dot product and the inertia is the sum of (1 - cos).

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"

namespace uel::cluster {

struct KMeansConfig {
  int64_t k = 8;
  std::string metric = "euclidean";  // euclidean | cosine
  std::string init = "kmeans++";     // kmeans++ | random
  int64_t n_init = 1;                // restarts; the lowest inertia wins (ignored on warm start)
  int64_t max_iter = 100;
  double tol = 1e-4;
  uint64_t seed = 0;
};

// Names the fix for a bad value (ConfigError), before any collective.
void validate(const KMeansConfig& config);

struct KMeansResult {
  at::Tensor centroids;        // [k, D], the features' dtype and device
  at::Tensor assignments;      // this rank's rows, int64 [n_r], each row's nearest final centroid
  double inertia = 0;          // over all rows: sum of squared distances (cosine: of 1 - cos)
  int64_t iterations = 0;      // Lloyd steps of the kept run
  at::Tensor counts;           // int64 [k], rows per final cluster over all ranks
  int64_t empty_reseeded = 0;  // empty clusters re-seeded during the kept run
};

// Collective. local_features: this rank's rows [n_r, D] (n_r may be 0), float32 or float64, on
// any device (collectives use comm.device()). init_centroids [k, D]: warm start (one run).
KMeansResult kmeans(
    const at::Tensor& local_features,
    const KMeansConfig& config,
    comm::Communicator& comm,
    const at::Tensor& init_centroids = {});

}  // namespace uel::cluster
