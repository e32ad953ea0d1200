#include "uel/cluster/kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include "uel/core/error.h"
#include "uel/core/rng.h"

namespace uel::cluster {
namespace {

// FAISS's split factor: an empty cluster takes the largest one's centroid +- this fraction of
// the data's spread.
constexpr double kSplitEps = 1.0 / 1024;
// Rows per assignment block: bounds the [rows, k] score matrix to 2^24 entries.
constexpr int64_t kBlockEntries = int64_t{1} << 24;

// This rank's rows and the global facts every step needs.
struct Data {
  at::Tensor x;   // [n_r, D], L2-normalised for cosine
  at::Tensor x2;  // [n_r] squared norms
  int64_t dim = 0;
  int64_t total = 0;             // rows over all ranks
  std::vector<int64_t> offsets;  // first global row of each rank, plus the total
  int rank = 0;
  double mean_var = 0;  // mean per-feature variance (sklearn's tolerance scale)
  bool cosine = false;
};

at::TensorOptions f64(c10::Device device) {
  return at::TensorOptions().dtype(at::kDouble).device(device);
}

// Rows picked by their owners, {owner rank, row within the owner} (the row index matters only on
// the owner): [m, D] float64 on every rank through one all-reduce, the other ranks adding zeros.
struct Pick {
  int owner = 0;
  int64_t row = 0;
};

at::Tensor share_rows(const Data& data, const std::vector<Pick>& picks, comm::Communicator& comm) {
  const auto m = static_cast<int64_t>(picks.size());
  std::vector<int64_t> slots, rows;
  for (int64_t i = 0; i < m; ++i) {
    if (picks[i].owner == data.rank) {
      slots.push_back(i);
      rows.push_back(picks[i].row);
    }
  }
  at::Tensor out = at::zeros({m, data.dim}, f64(data.x.device()));
  if (!slots.empty()) {
    const auto device = data.x.device();
    out.index_copy_(
        0,
        at::tensor(slots).to(device),
        data.x.index_select(0, at::tensor(rows).to(device)).to(at::kDouble));
  }
  at::Tensor shared = out.to(comm.device());
  comm.all_reduce(shared, comm::ReduceOp::kSum);
  return shared.to(data.x.device());
}

Pick pick_global(const Data& data, int64_t row) {
  const auto end = std::upper_bound(data.offsets.begin(), data.offsets.end(), row);
  const int owner = static_cast<int>(end - data.offsets.begin()) - 1;
  return {owner, row - data.offsets[owner]};
}

// Squared distances [n, m] from rows x (squared norms x2) to centres c [m, D] of x's dtype.
at::Tensor sq_dist(const at::Tensor& x, const at::Tensor& x2, const at::Tensor& c) {
  return at::addmm(c.pow(2).sum(1).unsqueeze(0), x, c.t(), 1, -2)
      .add_(x2.unsqueeze(1))
      .clamp_min_(0);
}

// D^2 sampling: the rows in whose weight interval the global targets fall, walking the weights in
// global row order (ranks in order, then this rank's cumulative weights).
std::vector<Pick> locate(
    const Data& data,
    const std::vector<double>& rank_sums,
    const at::Tensor& weights,
    const std::vector<double>& targets) {
  std::vector<Pick> picks;
  at::Tensor cumulative;
  for (const double target : targets) {
    double before = 0, owner_before = 0;
    int owner = -1;
    for (int r = 0; r < static_cast<int>(rank_sums.size()); ++r) {
      if (rank_sums[r] > 0) {
        owner = r;
        owner_before = before;
        if (target < before + rank_sums[r])
          break;
      }
      before += rank_sums[r];
    }
    Pick pick{owner, 0};
    if (owner == data.rank) {
      if (!cumulative.defined())
        cumulative = weights.cumsum(0);
      const at::Tensor at_target = at::full({1}, target - owner_before, cumulative.options());
      // right=true skips rows of weight 0; rounding past the end lands on the last row.
      pick.row = std::min(
          at::searchsorted(cumulative, at_target, false, true).item<int64_t>(),
          weights.size(0) - 1);
    }
    picks.push_back(pick);
  }
  return picks;
}

std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor host = t.to(at::kCPU, at::kDouble).contiguous();
  return {host.data_ptr<double>(), host.data_ptr<double>() + host.numel()};
}

// sklearn's greedy k-means++: per centre, 2 + ln k candidates by D^2 sampling; the one giving the
// lowest potential is kept. Collectives per centre: the candidates' rows, the per-rank potentials.
at::Tensor init_kmeanspp(const Data& data, int64_t k, Rng& rng, comm::Communicator& comm) {
  const int64_t trials = 2 + static_cast<int64_t>(std::log(static_cast<double>(k)));
  const auto dtype = data.x.scalar_type();
  at::Tensor centers = at::empty({k, data.dim}, f64(data.x.device()));
  centers[0] = share_rows(data, {pick_global(data, rng.below(data.total))}, comm)[0];
  at::Tensor d2 = sq_dist(data.x, data.x2, centers.narrow(0, 0, 1).to(dtype)).select(1, 0);
  d2 = d2.to(at::kDouble);
  std::vector<double> rank_sums =
      to_vector(comm.all_gather(d2.sum().reshape({1}).to(comm.device())));
  for (int64_t c = 1; c < k; ++c) {
    double total = 0;
    for (const double s : rank_sums)
      total += s;
    std::vector<Pick> picks;
    if (total > 0) {
      std::vector<double> targets(trials);
      for (auto& t : targets)
        t = rng.uniform() * total;
      picks = locate(data, rank_sums, d2, targets);
    } else {  // every row sits on a centre (fewer distinct rows than k): any row will do
      for (int64_t t = 0; t < trials; ++t)
        picks.push_back(pick_global(data, rng.below(data.total)));
    }
    const at::Tensor candidates = share_rows(data, picks, comm);
    const at::Tensor with = at::minimum(
        sq_dist(data.x, data.x2, candidates.to(dtype)).to(at::kDouble), d2.unsqueeze(1));
    const at::Tensor pots = comm.all_gather(with.sum(0).to(comm.device())).view({-1, trials});
    const int64_t best = pots.sum(0).argmin().item<int64_t>();
    centers[c] = candidates[best];
    d2 = with.select(1, best).contiguous();
    rank_sums = to_vector(pots.select(1, best));
  }
  return centers;
}

// k distinct global rows (Floyd's sampling, in draw order).
at::Tensor init_random(const Data& data, int64_t k, Rng& rng, comm::Communicator& comm) {
  std::unordered_set<int64_t> seen;
  std::vector<Pick> picks;
  for (int64_t j = data.total - k; j < data.total; ++j) {
    int64_t row = rng.below(j + 1);
    if (seen.count(row))
      row = j;
    seen.insert(row);
    picks.push_back(pick_global(data, row));
  }
  return share_rows(data, picks, comm);
}

at::Tensor unit_rows(const at::Tensor& t) {
  return t / t.norm(2, 1, true).clamp_min(1e-12);
}

// Writes each row's nearest centre into `assignments`; returns the float64 vector to all-reduce:
// [per-cluster sums (k*D) when with_sums], per-cluster counts (k), inertia (1).
at::Tensor assign_rows(
    const Data& data, const at::Tensor& centers, bool with_sums, at::Tensor& assignments) {
  const int64_t n = data.x.size(0), k = centers.size(0);
  const at::Tensor c = centers.to(data.x.scalar_type());
  const at::Tensor c2 = c.pow(2).sum(1);
  const auto options = f64(data.x.device());
  at::Tensor sums = with_sums ? at::zeros({k, data.dim}, options) : at::Tensor();
  at::Tensor inertia = at::zeros({}, options);
  const int64_t block = std::max<int64_t>(1, kBlockEntries / k);
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t end = std::min(n, begin + block);
    const at::Tensor xb = data.x.slice(0, begin, end);
    // ||x||^2 does not change a row's argmin: add it to the minimum only.
    auto [best, index] = at::addmm(c2.unsqueeze(0), xb, c.t(), 1, -2).min(1);
    inertia += best.add_(data.x2.slice(0, begin, end)).clamp_min_(0).sum(at::kDouble);
    assignments.slice(0, begin, end).copy_(index);
    if (with_sums)
      sums.index_add_(0, index, xb.to(at::kDouble));
  }
  at::Tensor counts = at::bincount(assignments, {}, k).to(at::kDouble);
  std::vector<at::Tensor> parts;
  if (with_sums)
    parts.push_back(sums.flatten());
  parts.push_back(counts);
  parts.push_back(inertia.reshape({1}));
  return at::cat(parts);
}

struct Run {
  at::Tensor centers;  // float64 [k, D]
  at::Tensor assignments;
  at::Tensor counts;
  double inertia = 0;
  int64_t iterations = 0;
  int64_t reseeded = 0;
};

// Empty clusters take half of the largest one (FAISS's split); counts are updated as if the
// halves were exact so several empty clusters spread over several large ones.
int64_t reseed_empty(const Data& data, at::Tensor& centers, std::vector<double> counts) {
  const int64_t k = centers.size(0);
  const double spread = kSplitEps * std::sqrt(data.mean_var);
  at::Tensor delta;
  int64_t reseeded = 0;
  for (int64_t j = 0; j < k; ++j) {
    if (counts[j] > 0)
      continue;
    if (!delta.defined())  // +-+-... so the two halves move apart in every coordinate
      delta = at::arange(data.dim, centers.options()).remainder(2).mul(-2).add(1).mul(spread);
    const int64_t m = std::max_element(counts.begin(), counts.end()) - counts.begin();
    centers[j] = centers[m] + delta;
    centers[m] -= delta;
    counts[j] = std::floor(counts[m] / 2);
    counts[m] -= counts[j];
    ++reseeded;
  }
  return reseeded;
}

Run lloyd(
    const Data& data, at::Tensor centers, const KMeansConfig& config, comm::Communicator& comm) {
  const int64_t k = centers.size(0), d = data.dim;
  const double tol = config.tol * data.mean_var;
  Run run;
  run.assignments = at::empty({data.x.size(0)}, data.x.options().dtype(at::kLong));
  for (int64_t it = 1; it <= config.max_iter; ++it) {
    at::Tensor packed = assign_rows(data, centers, true, run.assignments).to(comm.device());
    comm.all_reduce(packed, comm::ReduceOp::kSum);
    packed = packed.to(centers.device());
    const at::Tensor counts = packed.narrow(0, k * d, k);
    at::Tensor next = packed.narrow(0, 0, k * d).view({k, d}) / counts.clamp_min(1).unsqueeze(1);
    run.reseeded += reseed_empty(data, next, to_vector(counts));
    if (data.cosine)
      next = unit_rows(next);
    // Every rank holds the same all-reduced values, so every rank takes the same decision.
    const double shift = (next - centers).pow(2).sum().item<double>();
    centers = next;
    run.iterations = it;
    if (shift <= tol)
      break;
  }
  // The returned assignments, counts and inertia belong to the returned centroids.
  at::Tensor packed = assign_rows(data, centers, false, run.assignments).to(comm.device());
  comm.all_reduce(packed, comm::ReduceOp::kSum);
  packed = packed.cpu();
  run.counts = packed.narrow(0, 0, k).to(at::kLong);
  run.inertia = packed[k].item<double>();
  run.centers = centers;
  return run;
}

Data prepare(const at::Tensor& features, bool cosine, comm::Communicator& comm) {
  UEL_CHECK(
      features.dim() == 2 && at::isFloatingType(features.scalar_type()) &&
          features.scalar_type() != at::kHalf && features.scalar_type() != at::kBFloat16,
      "k-means expects float32 or float64 features [n, D], got {} [{}]",
      c10::toString(features.scalar_type()),
      fmt::join(features.sizes(), ", "));
  Data data;
  data.rank = comm.rank();
  data.cosine = cosine;
  data.x = cosine ? unit_rows(features).contiguous() : features.contiguous();
  data.x2 = data.x.pow(2).sum(1);
  data.dim = features.size(1);
  const at::Tensor shape =
      comm.all_gather(at::tensor({features.size(0), data.dim}).to(comm.device()))
          .cpu()
          .view({-1, 2});
  data.offsets.push_back(0);
  for (int r = 0; r < comm.size(); ++r) {
    UEL_CHECK(
        shape[r][1].item<int64_t>() == data.dim,
        "k-means: rank {} has {}-dimensional features, rank {} has {}",
        r,
        shape[r][1].item<int64_t>(),
        data.rank,
        data.dim);
    data.offsets.push_back(data.offsets.back() + shape[r][0].item<int64_t>());
  }
  data.total = data.offsets.back();
  // Two passes (mean, then squared deviations): E[x^2] - E[x]^2 cancels badly far from 0.
  at::Tensor mean = data.x.sum(0, false, at::kDouble).to(comm.device());
  comm.all_reduce(mean, comm::ReduceOp::kSum);
  mean = mean.to(data.x.device()) / std::max<int64_t>(1, data.total);
  at::Tensor deviation = (data.x.to(at::kDouble) - mean).pow(2).sum(0).to(comm.device());
  comm.all_reduce(deviation, comm::ReduceOp::kSum);
  data.mean_var = deviation.mean().item<double>() / std::max<int64_t>(1, data.total);
  return data;
}

}  // namespace

void validate(const KMeansConfig& config) {
  UEL_CHECK_CONFIG(config.k >= 1, "k-means needs k >= 1 clusters (--k), got {}", config.k);
  UEL_CHECK_CONFIG(
      config.metric == "euclidean" || config.metric == "cosine",
      "k-means metric '{}' is unknown; use euclidean or cosine",
      config.metric);
  UEL_CHECK_CONFIG(
      config.init == "kmeans++" || config.init == "random",
      "k-means init '{}' is unknown; use kmeans++ or random",
      config.init);
  UEL_CHECK_CONFIG(config.n_init >= 1, "k-means n_init must be >= 1, got {}", config.n_init);
  UEL_CHECK_CONFIG(config.max_iter >= 1, "k-means max_iter must be >= 1, got {}", config.max_iter);
  UEL_CHECK_CONFIG(config.tol >= 0, "k-means tol must be >= 0, got {}", config.tol);
}

KMeansResult kmeans(
    const at::Tensor& local_features,
    const KMeansConfig& config,
    comm::Communicator& comm,
    const at::Tensor& init_centroids) {
  validate(config);
  const Data data = prepare(local_features, config.metric == "cosine", comm);
  UEL_CHECK_DATA(
      data.total >= config.k,
      "k-means with k = {} needs at least k rows, the data has {}; lower k",
      config.k,
      data.total);
  Run best;
  if (init_centroids.defined()) {
    UEL_CHECK_CONFIG(
        init_centroids.dim() == 2 && init_centroids.size(0) == config.k &&
            init_centroids.size(1) == data.dim,
        "k-means warm start: centroids must be [k = {}, D = {}], got [{}]",
        config.k,
        data.dim,
        fmt::join(init_centroids.sizes(), ", "));
    at::Tensor start = init_centroids.to(data.x.device(), at::kDouble);
    best = lloyd(data, data.cosine ? unit_rows(start) : start, config, comm);
  } else {
    for (int64_t restart = 0; restart < config.n_init; ++restart) {
      Rng rng(stream_key(config.seed, RngPurpose::kKMeans, 0, restart));
      at::Tensor start = config.init == "random" ? init_random(data, config.k, rng, comm)
                                                 : init_kmeanspp(data, config.k, rng, comm);
      if (data.cosine)
        start = unit_rows(start);
      Run run = lloyd(data, start, config, comm);
      if (restart == 0 || run.inertia < best.inertia)
        best = std::move(run);
    }
  }
  KMeansResult result;
  result.centroids = best.centers.to(local_features.scalar_type());
  result.assignments = best.assignments;
  // On unit vectors ||x - c||^2 = 2 (1 - cos).
  result.inertia = data.cosine ? best.inertia / 2 : best.inertia;
  result.iterations = best.iterations;
  result.counts = best.counts;
  result.empty_reseeded = best.reseeded;
  return result;
}

}  // namespace uel::cluster
