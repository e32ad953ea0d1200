#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>
#include <thread>

#include <fmt/format.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include "commands.h"
#ifdef UEL_HAVE_FAISS
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <omp.h>
#endif

#include "uel/cli/config.h"
#include "uel/cluster/kmeans.h"
#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/clock.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/core/rng.h"
#include "uel/core/shard.h"
#include "uel/data/pipeline.h"
#include "uel/losses/memory_bank.h"
#include "uel/methods/method.h"
#include "uel/runtime/compute.h"
#include "uel/runtime/op_profile.h"
#include "uel/train/trainer.h"

namespace uel::cli {
namespace {

using core::Clock;
using core::seconds_since;

// Declares every option over the benchmark's defaults in `config`, parses and validates them;
// false after --help.
bool parse_options(OptionSet& options, Config& config, const Args& args) {
  config.declare(options);
  return options.parse(args);
}

// Read + two-view augmentation throughput of the training input, world size 1.
int bench_loader(const Args& args) {
  Config config;
  config.train.threads = 1;  // one core unless asked otherwise: the loader must not need more
  OptionSet options("uel bench loader --data.train=FILE.h5 [--section.key=value ...]");
  if (!parse_options(options, config, args)) {
    return 0;
  }
  runtime::configure_compute(config.train.threads, /*local_ranks=*/1);

  data::TrainData input = data::open_train_data(
      config.data, config.aug, config.train.batch_size, config.train.seed, 0, 1, c10::kCPU);
  data::Loader& loader = *input.loader;
  loader.start_epoch(0);
  for (int64_t i = 0; i < config.bench.warmup; ++i) {
    loader.next_cycling();
  }
  int64_t instances = 0;
  const auto start = Clock::now();
  for (int64_t i = 0; i < config.bench.steps; ++i) {
    instances += loader.next_cycling().indices.size(0);
  }
  const double seconds = seconds_since(start);
  const double img_per_s = instances / seconds;
  const auto& info = input.dataset->info();
  std::printf(
      "%s",
      fmt::format(
          "loader benchmark: {} ({}x{}x{}), batch {}, {} workers, {} LibTorch threads\n"
          "{:>10} {:>12} {:>14} {:>14}\n{:>10} {:>12.3f} {:>14.0f} {:>14.0f}\n",
          info.path,
          info.height,
          info.width,
          info.channels,
          config.train.batch_size,
          config.data.workers,
          config.train.threads,
          "steps",
          "seconds",
          "instances/s",
          "views/s",
          config.bench.steps,
          seconds,
          img_per_s,
          2 * img_per_s)
          .c_str());
  std::printf(
      "%s\n",
      fmt::format(
          R"({{"bench": "loader", "dataset": "{}", "batch": {}, "workers": {}, "threads": {}, )"
          R"("steps": {}, "seconds": {:.4f}, "img_per_s": {:.1f}, "views_per_s": {:.1f}}})",
          info.name,
          config.train.batch_size,
          config.data.workers,
          config.train.threads,
          config.bench.steps,
          seconds,
          img_per_s,
          2 * img_per_s)
          .c_str());
  return 0;
}

double now_seconds() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// nccl-tests' definitions: algbw = bytes / time; busbw scales it by the fraction of the data
// each rank must send, 2(n-1)/n for all-reduce and (n-1)/n for all-gather and reduce-scatter.
struct CommResult {
  std::string op;
  int64_t bytes = 0;
  double seconds = 0;
  double algbw = 0;
  double busbw = 0;
  // The plain MPI call on the same buffer (mpi backend, CPU): MPI_Allreduce for all_reduce,
  // MPI_Reduce_scatter_block for reduce_scatter.
  double raw_mpi_seconds = -1;
};

int bench_comm(const Args& args) {
  Config config;
  config.bench.steps = 20;
  config.bench.warmup = 2;
  OptionSet options("mpirun -np N uel bench comm [--comm.backend=auto] [--bench.device=auto]");
  config.declare_comm(options);
  config.declare_bench(options);
  options.add_validator([&] { config.validate(); });
  if (!options.parse(args)) {
    return 0;
  }
  const comm::WorldInfo& world = start_ranks(/*threads=*/1);
  comm::Watchdog::instance().set_timeout(config.comm.timeout_s);
  const c10::Device device = comm::select_device(config.bench.device, config.comm.backend == "mpi");
  std::unique_ptr<comm::Communicator> comm = comm::make_communicator(config.comm.backend, device);
  const int n = comm->size();
  MPI_Comm raw = MPI_COMM_NULL;
  const bool compare_raw = comm->backend() == "mpi" && device.is_cpu();
  if (compare_raw) {
    MPI_Comm_dup(comm::world_comm(), &raw);
  }
  auto sync = [&] {
    if (device.is_cuda())
      torch::cuda::synchronize(device.index());
  };
  // Slowest rank's mean seconds per call.
  auto time_calls = [&](int64_t bytes, const std::function<void()>& call) {
    const int64_t iters =
        std::max<int64_t>(3, std::min<int64_t>(config.bench.steps, (int64_t{1} << 28) / bytes));
    for (int64_t i = 0; i < config.bench.warmup; ++i)
      call();
    sync();
    comm->barrier();
    const double start = now_seconds();
    for (int64_t i = 0; i < iters; ++i)
      call();
    sync();
    return comm->all_reduce_scalar((now_seconds() - start) / iters, comm::ReduceOp::kMax);
  };

  std::vector<CommResult> results;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  for (int64_t bytes = config.bench.min_bytes; bytes <= config.bench.max_bytes; bytes *= 4) {
    const int64_t count = std::max<int64_t>(n, bytes / 4 / n * n);  // divisible by n
    const int64_t size = count * 4;
    at::Tensor full = at::zeros({count}, opts);
    at::Tensor part = at::zeros({count / n}, opts);

    CommResult reduce{"all_reduce", size};
    reduce.seconds = time_calls(size, [&] { comm->all_reduce(full, comm::ReduceOp::kSum); });
    if (compare_raw) {
      reduce.raw_mpi_seconds = time_calls(size, [&] {
        MPI_Allreduce(
            MPI_IN_PLACE, full.data_ptr<float>(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, raw);
      });
    }
    CommResult gather{"all_gather", size};
    gather.seconds = time_calls(size, [&] { comm->all_gather(part); });
    CommResult scatter{"reduce_scatter", size};
    scatter.seconds = time_calls(size, [&] { comm->reduce_scatter(full, comm::ReduceOp::kSum); });
    if (compare_raw) {
      scatter.raw_mpi_seconds = time_calls(size, [&] {
        MPI_Reduce_scatter_block(
            full.data_ptr<float>(),
            part.data_ptr<float>(),
            static_cast<int>(count / n),
            MPI_FLOAT,
            MPI_SUM,
            raw);
      });
    }
    for (CommResult* r : {&reduce, &gather, &scatter}) {
      r->algbw = r->bytes / r->seconds / 1e9;
      const double factor = r == &reduce ? 2.0 * (n - 1) / n : double(n - 1) / n;
      r->busbw = r->algbw * factor;
      results.push_back(*r);
    }
  }
  if (raw != MPI_COMM_NULL) {
    MPI_Comm_free(&raw);
  }

  std::string table = fmt::format(
      "comm benchmark: backend {}, {} ranks, device {}\n{:<15} {:>12} {:>12} {:>10} {:>10} {:>12} "
      "{:>8}\n",
      comm->backend(),
      n,
      device.str(),
      "op",
      "bytes",
      "time_us",
      "algbw_GBs",
      "busbw_GBs",
      "raw_mpi_us",
      "vs_raw");
  std::string json;
  for (const auto& r : results) {
    const bool raw_known = r.raw_mpi_seconds > 0;
    table += fmt::format(
        "{:<15} {:>12} {:>12.1f} {:>10.3f} {:>10.3f} {:>12} {:>8}\n",
        r.op,
        r.bytes,
        r.seconds * 1e6,
        r.algbw,
        r.busbw,
        raw_known ? fmt::format("{:.1f}", r.raw_mpi_seconds * 1e6) : "-",
        raw_known ? fmt::format("{:.3f}", r.seconds / r.raw_mpi_seconds) : "-");
    json += fmt::format(
        R"({}{{"op": "{}", "bytes": {}, "time_us": {:.2f}, "algbw": {:.4f}, "busbw": {:.4f}{}}})",
        json.empty() ? "" : ", ",
        r.op,
        r.bytes,
        r.seconds * 1e6,
        r.algbw,
        r.busbw,
        raw_known ? fmt::format(R"(, "raw_mpi_us": {:.2f})", r.raw_mpi_seconds * 1e6) : "");
  }
  if (world.rank == 0) {
    std::printf(
        "%s%s\n",
        table.c_str(),
        fmt::format(
            R"({{"bench": "comm", "backend": "{}", "ranks": {}, "device": "{}", "results": [{}]}})",
            comm->backend(),
            n,
            device.str(),
            json)
            .c_str());
  }
  return 0;
}

// Rank 0's step by operator, the `count` largest self times, then what ran outside any op.
void print_op_profile(const train::StepBenchmark& result, int64_t count, int64_t steps) {
  const double step_ms = 1e3 * result.step_seconds;
  std::string table = fmt::format(
      "rank 0's step, {:.1f} ms, by operator (self time: less the ops it called)\n{:>10} {:>7} "
      "{:>11}  {}\n",
      step_ms,
      "ms/step",
      "% step",
      "calls/step",
      "operator");
  const auto row = [&](double ms, const std::string& calls, const std::string& name) {
    table += fmt::format("{:>10.2f} {:>6.1f}% {:>11}  {}\n", ms, 100 * ms / step_ms, calls, name);
  };
  const int64_t shown = std::min<int64_t>(count, static_cast<int64_t>(result.ops.size()));
  double shown_ms = 0;
  for (int64_t i = 0; i < shown; ++i) {
    const runtime::OpTime& op = result.ops[i];
    shown_ms += 1e3 * op.self_seconds;
    row(1e3 * op.self_seconds,
        fmt::format("{:.1f}", static_cast<double>(op.calls) / steps),
        op.name);
  }
  const double inside_ms = 1e3 * result.inside_ops_seconds;
  if (shown < static_cast<int64_t>(result.ops.size()))
    row(inside_ms - shown_ms, "", fmt::format("the other {} operators", result.ops.size() - shown));
  row(step_ms - inside_ms, "", "outside operators (collectives, waiting for data, uel's own code)");
  std::printf("%s", table.c_str());
}

// Full training steps (data + forward + backward + gradient sync + SGD) per second.
int bench_step(const Args& args) {
  Config config;
  config.bench.steps = 20;
  // The first ~20 steps run at about half the steady speed on CPU (oneDNN primitives, the
  // allocator's caches, thread pools): timed after them, the figure is the steady one.
  config.bench.warmup = 20;
  OptionSet options(
      "[mpirun -np N] uel bench step --config configs/X.ini [--section.key=value ...]");
  if (!parse_options(options, config, args)) {
    return 0;
  }
  config.eval.every = 0;  // no evaluation inside the timing
  config.resolved_ini = options.to_ini();
  const comm::WorldInfo& world = start_ranks(config.train.threads);
  train::Trainer trainer(config, "");
  const train::StepBenchmark result =
      trainer.benchmark(config.bench.steps, config.bench.warmup, config.bench.ops > 0);
  const double img_per_s = result.img_per_s;
  const int views = methods::views(config.method);
  const double gradient_mb = static_cast<double>(result.gradient_bytes) / (1 << 20);
  // Exposed time can exceed the all-reduces' own when a peer's backward is slower.
  const double hidden = result.all_reduce_seconds > 0
                            ? std::max(0.0, 1 - result.exposed_seconds / result.all_reduce_seconds)
                            : 0.0;
  const std::string sync_text =
      result.timed_all_reduce
          ? fmt::format(
                "{:.1f} ms all-reducing, {:.1f} ms exposed ({:.0f}% hidden behind backward)",
                1e3 * result.all_reduce_seconds,
                1e3 * result.exposed_seconds,
                100 * hidden)
          : std::string("not timed: NCCL runs them on the device");
  const std::string sync_json = result.timed_all_reduce
                                    ? fmt::format(
                                          R"(, "allreduce_ms": {:.3f}, "exposed_ms": {:.3f})",
                                          1e3 * result.all_reduce_seconds,
                                          1e3 * result.exposed_seconds)
                                    : "";
  if (world.rank == 0) {
    std::printf(
        "%s\n",
        fmt::format(
            "step benchmark: {} {} on {}, {} ranks, global batch {} ({} views/step), {} steps "
            "after {} warm-up steps\n"
            "{:.1f} instances/s ({:.1f} views/s, {:.1f} instances/s per rank)\n"
            "gradient all-reduce per step (mean of ranks): {:.1f} MB in {} buckets, {}\n"
            "BLAS: {}\n"
            R"({{"bench": "step", "method": "{}", "arch": "{}", "data": "{}", "ranks": {}, "batch": {}, )"
            R"("threads": {}, "steps": {}, "warmup": {}, "img_per_s": {:.2f}, "buckets": {}, )"
            R"("gradient_mb": {:.3f}{}}})",
            config.method.name,
            config.model.arch,
            config.data.train,
            world.size,
            config.train.batch_size,
            views * config.train.batch_size,
            config.bench.steps,
            config.bench.warmup,
            img_per_s,
            views * img_per_s,
            img_per_s / world.size,
            gradient_mb,
            result.buckets,
            sync_text,
            runtime::blas_description(),
            config.method.name,
            config.model.arch,
            config.data.train,
            world.size,
            config.train.batch_size,
            at::get_num_threads(),
            config.bench.steps,
            config.bench.warmup,
            img_per_s,
            result.buckets,
            gradient_mb,
            sync_json)
            .c_str());
    if (config.bench.ops > 0)
      print_op_profile(result, config.bench.ops, config.bench.steps);
  }
  return 0;
}

// The sharded memory bank alone: draw negatives, loss forward and backward, bank update, on
// random unit queries, for each bank size N and negative count K on this world size.
int bench_bank(const Args& args) {
  Config config;
  config.bench.steps = 10;
  config.bench.warmup = 2;
  config.train.batch_size = 256;
  OptionSet options(
      "[mpirun -np N] uel bench bank [--bench.bank_rows=1e5,1.28e6] [--bench.bank_k=4096,65536]");
  if (!parse_options(options, config, args)) {
    return 0;
  }
  const comm::WorldInfo& world = start_ranks(config.train.threads);
  comm::Watchdog::instance().set_timeout(config.comm.timeout_s);
  const c10::Device device = comm::select_device(config.bench.device, config.comm.backend == "mpi");
  auto comm = comm::make_communicator(config.comm.backend, device);
  const int64_t batch = config.train.batch_size, dim = config.model.low_dim;
  UEL_CHECK_CONFIG(
      batch % world.size == 0,
      "--train.batch_size {} is not divisible by {} ranks",
      batch,
      world.size);
  const int64_t local = batch / world.size;
  const auto options_f = at::TensorOptions().device(device).dtype(at::kFloat);

  std::string table = fmt::format(
      "memory-bank benchmark: {} ranks ({}, {}), batch {}, dim {}, {} steps\n"
      "{:>10} {:>7} {:>14} {:>14} {:>12} {:>10}\n",
      world.size,
      comm->backend(),
      device.str(),
      batch,
      dim,
      config.bench.steps,
      "N",
      "K",
      "bytes/step",
      "bank MB/rank",
      "ms/step",
      "img/s");
  std::string json;
  for (const double rows_value : config.bench.bank_rows) {
    for (const double k_value : config.bench.bank_k) {
      const auto n = static_cast<int64_t>(rows_value);
      losses::NceConfig nce = config.method.nce;
      nce.k = static_cast<int64_t>(k_value);
      losses::validate(nce);
      losses::MemoryBank bank(n, dim, config.train.seed, world.rank, world.size, options_f);
      double seconds = 0;
      int64_t bytes = 0;
      for (int64_t step = 0; step < config.bench.warmup + config.bench.steps; ++step) {
        Rng rng(stream_key(config.train.seed, RngPurpose::kSampler, 0, step));
        std::vector<int64_t> all_items(batch);
        for (auto& item : all_items)
          item = rng.below(n);
        const at::Tensor items = at::tensor(std::vector<int64_t>(
            all_items.begin() + world.rank * local, all_items.begin() + (world.rank + 1) * local));
        at::Tensor features = at::randn({local, dim}, options_f);
        features = (features / features.norm(2, 1, true)).requires_grad_(true);
        comm->barrier();
        const comm::CommStats before = comm->stats();
        const auto start = Clock::now();
        at::Tensor negatives;
        if (nce.k > 0)
          negatives = bank.draw_negatives(batch, nce.k, derive_key(config.train.seed, step));
        losses::BankLoss out = losses::bank_loss(features, items, bank, nce, negatives, *comm);
        out.loss.backward();
        {
          at::NoGradGuard no_grad;
          bank.update(out.items, out.queries, nce.momentum);
        }
        if (device.is_cuda())
          torch::cuda::synchronize();
        const double elapsed = seconds_since(start);
        if (step >= config.bench.warmup) {
          bytes += comm->stats().total_bytes() - before.total_bytes();
          seconds += comm->all_reduce_scalar(elapsed, comm::ReduceOp::kMax);
        }
      }
      const double ms = 1e3 * seconds / config.bench.steps;
      const double bank_mb = comm->all_reduce_scalar(
          static_cast<double>(bank.rows().numel() * 4) / (1 << 20), comm::ReduceOp::kMax);
      const int64_t per_step = bytes / config.bench.steps;
      table += fmt::format(
          "{:>10} {:>7} {:>14} {:>14.1f} {:>12.2f} {:>10.0f}\n",
          n,
          nce.k,
          per_step,
          bank_mb,
          ms,
          batch / (ms / 1e3));
      json += fmt::format(
          R"({}{{"rows": {}, "k": {}, "bytes_per_step": {}, "bank_mb_per_rank": {:.2f}, "ms_per_step": {:.3f}}})",
          json.empty() ? "" : ", ",
          n,
          nce.k,
          per_step,
          bank_mb,
          ms);
    }
  }
  if (world.rank == 0) {
    std::printf(
        "%s%s\n",
        table.c_str(),
        fmt::format(
            R"({{"bench": "bank", "backend": "{}", "ranks": {}, "device": "{}", "batch": {}, "dim": {}, "results": [{}]}})",
            comm->backend(),
            world.size,
            device.str(),
            batch,
            dim,
            json)
            .c_str());
  }
  return 0;
}

// Rows [begin, end) of the synthetic k-means data: chunks of 4096 Gaussian rows, each drawn from
// its own seeded generator, so every split of the rows sees the same matrix.
at::Tensor synthetic_rows(int64_t begin, int64_t end, int64_t dim, uint64_t seed) {
  constexpr int64_t kChunk = 4096;
  std::vector<at::Tensor> parts;
  for (int64_t chunk = begin / kChunk; chunk * kChunk < end; ++chunk) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(derive_key(seed, chunk));
    const at::Tensor rows = at::randn({kChunk, dim}, generator, at::TensorOptions(at::kFloat));
    const int64_t lo = std::max(begin, chunk * kChunk), hi = std::min(end, (chunk + 1) * kChunk);
    parts.push_back(rows.slice(0, lo - chunk * kChunk, hi - chunk * kChunk));
  }
  return parts.empty() ? at::empty({0, dim}, at::kFloat) : at::cat(parts);
}

#ifdef UEL_HAVE_FAISS
// FAISS's CPU k-means on rank 0 over every row with `threads` OpenMP threads (the job's total),
// seconds per iteration after the first. The other ranks wait without spinning on the cores.
double faiss_seconds_per_iteration(
    int64_t n, int64_t dim, int64_t k, int64_t iterations, uint64_t seed, int threads) {
  double per_iteration = 0;
  if (comm::world().rank == 0) {
    const at::Tensor x = synthetic_rows(0, n, dim, seed).contiguous();
    omp_set_num_threads(threads);
    faiss::ClusteringParameters parameters;
    parameters.niter = static_cast<int>(iterations + 1);
    parameters.max_points_per_centroid = std::numeric_limits<int>::max();  // no subsampling
    parameters.min_points_per_centroid = 1;
    faiss::Clustering clustering(static_cast<int>(dim), static_cast<int>(k), parameters);
    faiss::IndexFlatL2 index(dim);
    clustering.train(n, x.data_ptr<float>(), index);
    const auto& stats = clustering.iteration_stats;  // time: seconds since the start
    per_iteration = (stats.back().time - stats.front().time) / iterations;
  }
  MPI_Request request;
  MPI_Ibarrier(comm::world_comm(), &request);
  for (int done = 0; !done; MPI_Test(&request, &done, MPI_STATUS_IGNORE))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return per_iteration;
}
#endif

// Seconds per Lloyd iteration of cluster::kmeans on synthetic Gaussian rows sharded over this
// world, for each N and K: (time of 1 + steps iterations - time of 1) / steps, so the
// initialisation, the variance pass and the final assignment cancel out.
int bench_kmeans(const Args& args) {
  Config config;
  config.bench.steps = 5;
  OptionSet options(
      "[mpirun -np N] uel bench kmeans [--bench.kmeans_rows=60000,1e6] "
      "[--bench.kmeans_k=10,100,1000] "
      "[--train.threads=T]");
  if (!parse_options(options, config, args)) {
    return 0;
  }
  const comm::WorldInfo& world = start_ranks(config.train.threads);
  comm::Watchdog::instance().set_timeout(config.comm.timeout_s);
  auto comm = comm::make_communicator(config.comm.backend, c10::Device(c10::kCPU));
  const int64_t dim = config.model.low_dim, steps = config.bench.steps;
  const int threads = at::get_num_threads();
#ifdef UEL_HAVE_FAISS
  const bool with_faiss = true;
#else
  const bool with_faiss = false;
#endif
  std::string table = fmt::format(
      "k-means benchmark: {} ranks x {} threads, D {}, float32, {} timed Lloyd iterations{}\n"
      "{:>9} {:>6} {:>14} {:>16} {:>10}\n",
      world.size,
      threads,
      dim,
      steps,
      with_faiss ? fmt::format("; FAISS with {} threads on rank 0", world.size * threads) : "",
      "N",
      "K",
      "uel s/iter",
      "FAISS s/iter",
      "uel/FAISS");
  std::string json;
  for (const double rows_value : config.bench.kmeans_rows) {
    const auto n = static_cast<int64_t>(rows_value);
    const ShardRange shard = shard_range(n, world.rank, world.size);
    const at::Tensor x = synthetic_rows(shard.begin, shard.end, dim, config.train.seed);
    for (const double k_value : config.bench.kmeans_k) {
      cluster::KMeansConfig kmeans;
      kmeans.k = static_cast<int64_t>(k_value);
      kmeans.init = "random";
      kmeans.tol = 0;
      kmeans.seed = config.train.seed;
      auto timed = [&](int64_t iterations) {
        kmeans.max_iter = iterations;
        comm->barrier();
        const auto start = Clock::now();
        const cluster::KMeansResult r = cluster::kmeans(x, kmeans, *comm);
        UEL_CHECK(
            r.iterations == iterations, "k-means converged early; use more rows or fewer steps");
        return comm->all_reduce_scalar(seconds_since(start), comm::ReduceOp::kMax);
      };
      timed(1);  // warm-up: allocator caches, thread pools
      const double uel_s = (timed(1 + steps) - timed(1)) / steps;
      double faiss_s = -1;
#ifdef UEL_HAVE_FAISS
      faiss_s = comm->all_reduce_scalar(
          faiss_seconds_per_iteration(
              n, dim, kmeans.k, steps, config.train.seed, world.size * threads),
          comm::ReduceOp::kMax);
      at::set_num_threads(threads);
#endif
      const bool known = faiss_s > 0;
      table += fmt::format(
          "{:>9} {:>6} {:>14.4f} {:>16} {:>10}\n",
          n,
          kmeans.k,
          uel_s,
          known ? fmt::format("{:.4f}", faiss_s) : "-",
          known ? fmt::format("{:.2f}", uel_s / faiss_s) : "-");
      json += fmt::format(
          R"({}{{"rows": {}, "k": {}, "uel_s_per_iter": {:.5f}{}}})",
          json.empty() ? "" : ", ",
          n,
          kmeans.k,
          uel_s,
          known ? fmt::format(R"(, "faiss_s_per_iter": {:.5f})", faiss_s) : "");
    }
  }
  if (world.rank == 0) {
    std::printf(
        "%s%s\n",
        table.c_str(),
        fmt::format(
            R"({{"bench": "kmeans", "ranks": {}, "threads": {}, "dim": {}, "steps": {}, "results": [{}]}})",
            world.size,
            threads,
            dim,
            steps,
            json)
            .c_str());
  }
  return 0;
}
}  // namespace

int run_bench(const Args& args) {
  struct Bench {
    const char* name;
    int (*run)(const Args&);
    const char* summary;
  };
  static const Bench benches[] = {
      {"loader", bench_loader, "images/s of the data pipeline (decode, augment, batch)"},
      {"comm", bench_comm, "all-reduce and all-gather bandwidth per message size"},
      {"step", bench_step, "images/s of whole training steps of a recipe"},
      {"bank", bench_bank, "memory-bank draw and update per bank size and K"},
      {"kmeans", bench_kmeans, "distributed k-means per Lloyd iteration (and FAISS's)"},
  };
  std::string usage =
      "usage: [mpirun -np N] uel bench <name> [options]   (uel bench <name> "
      "--help for its options)\n\nbenchmarks:\n";
  for (const Bench& b : benches)
    usage += fmt::format("  {:<10} {}\n", b.name, b.summary);
  if (!args.empty() && (args.front() == "--help" || args.front() == "-h")) {
    std::fputs(usage.c_str(), stdout);
    return 0;
  }
  UEL_CHECK_CONFIG(
      !args.empty() && args.front()[0] != '-',
      "name the benchmark: uel bench <loader|comm|step|bank|kmeans> [options]; `uel bench "
      "--help` describes them");
  for (const Bench& b : benches) {
    if (args.front() == b.name)
      return b.run(Args(args.begin() + 1, args.end()));
  }
  UEL_CHECK_CONFIG(
      false,
      "unknown benchmark '{}'; available: loader, comm, step, bank, kmeans (`uel bench --help`)",
      args.front());
  return 2;
}

}  // namespace uel::cli
