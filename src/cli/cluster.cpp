// uel cluster: distributed k-means on an embeddings file; each rank reads and keeps its shard.

#include <cstdio>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "commands.h"
#include "uel/cli/config.h"
#include "uel/cluster/kmeans.h"
#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/clock.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/data/dataset.h"
#include "uel/eval/cluster_metrics.h"

namespace uel::cli {

int run_cluster(const Args& args) {
  Config config;
  cluster::KMeansConfig kmeans;
  kmeans.k = 0;
  std::string data, out, device = "auto";
  int threads = 0;
  OptionSet options("[mpirun -np N] uel cluster --data EMB.h5 --k K --out OUT.h5 [options]");
  options.add("data", &data, "embeddings file of `uel embed` (/embeddings, optional /labels)");
  options.add("out", &out, "output HDF5: /assignments int64 [N], /centroids [k, D], inertia");
  options.add("k", &kmeans.k, "number of clusters", OptionSet::positive<int64_t>());
  options.add_choice(
      "metric", &kmeans.metric, {"euclidean", "cosine"}, "cosine = spherical k-means");
  options.add_choice("init", &kmeans.init, {"kmeans++", "random"}, "initial centroids");
  options.add(
      "n_init",
      &kmeans.n_init,
      "restarts; the lowest inertia wins",
      OptionSet::positive<int64_t>());
  options.add(
      "max_iter", &kmeans.max_iter, "Lloyd iterations at most", OptionSet::positive<int64_t>());
  options.add(
      "tol",
      &kmeans.tol,
      "stop when the squared centroid shift <= tol * mean feature variance (sklearn's rule)",
      OptionSet::non_negative<double>());
  options.add("seed", &kmeans.seed, "seeds the initialisation (same result on any world size)");
  options.add("threads", &threads, "LibTorch threads per rank (0: cores / local ranks)");
  options.add_choice("device", &device, {"auto", "cpu", "cuda"}, "where the features live");
  config.declare_comm(options);
  options.add_validator([&] {
    UEL_CHECK_CONFIG(
        !data.empty() && !out.empty() && kmeans.k > 0,
        "--data EMB.h5, --out OUT.h5 and --k are required");
    cluster::validate(kmeans);
  });
  if (!options.parse(args))
    return 0;

  const comm::WorldInfo& world = start_ranks(threads);
  comm::Watchdog::instance().set_timeout(config.comm.timeout_s);
  comm::set_check_order(config.comm.check_order);
  const c10::Device on = comm::select_device(device, config.comm.backend == "mpi");
  auto comm = comm::make_communicator(config.comm.backend, on);
  const data::EmbeddingRows rows = data::read_embedding_shard(data, world.rank, world.size);

  comm->barrier();
  const auto start = core::Clock::now();
  const cluster::KMeansResult result = cluster::kmeans(rows.embeddings.to(on), kmeans, *comm);
  const double seconds = comm->all_reduce_scalar(core::seconds_since(start), comm::ReduceOp::kMax);

  // Shards are contiguous and in rank order, so the gathers restore the file's order.
  const at::Tensor assignments = comm->all_gather_v(result.assignments.to(on)).cpu();
  const bool labelled = rows.labels.defined();  // the same file on every rank
  const at::Tensor labels = labelled ? comm->all_gather_v(rows.labels.to(on)).cpu() : at::Tensor();
  if (world.rank != 0)
    return 0;
  data::write_clustering(
      out, {assignments, result.centroids, data, kmeans.metric, result.inertia, result.iterations});
  log_info("wrote {} ({} rows in {} clusters)", out, rows.total, kmeans.k);
  std::string scores;
  if (labelled) {
    scores = fmt::format(
        R"(, "nmi": {:.6f}, "ari": {:.6f})",
        eval::nmi(labels, assignments),
        eval::ari(labels, assignments));
  }
  std::printf(
      "%s\n",
      fmt::format(
          R"({{"k": {}, "metric": "{}", "rows": {}, "ranks": {}, "inertia": {:.9g}, "iterations": {}, )"
          R"("empty_reseeded": {}, "seconds": {:.4f}{}, "out": "{}"}})",
          kmeans.k,
          kmeans.metric,
          rows.total,
          world.size,
          result.inertia,
          result.iterations,
          result.empty_reseeded,
          seconds,
          scores,
          out)
          .c_str());
  return 0;
}

}  // namespace uel::cli
