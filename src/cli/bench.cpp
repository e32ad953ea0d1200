#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "uel/cli/config.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/data/pipeline.h"

namespace uel::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Read + two-view augmentation throughput of the training input, world size 1.
int bench_loader(const Args& args) {
  Config config;
  config.train.threads = 1;  // one core unless asked otherwise: the loader must not need more
  OptionSet options("uel bench loader --data.train=FILE.h5 [--section.key=value ...]");
  config.declare(options);
  if (!options.parse(args)) {
    return 0;
  }
  config.validate();
  configure_compute(config.train.threads, /*local_ranks=*/1);

  data::TrainData input = data::open_train_data(
      config.data, config.aug, config.train.batch_size, config.train.seed, 0, 1, c10::kCPU);
  data::Loader& loader = *input.loader;
  int64_t epoch = 0;
  loader.start_epoch(epoch);
  auto next_batch = [&] {
    std::optional<data::Batch> batch = loader.next();
    if (!batch) {
      loader.start_epoch(++epoch);
      batch = loader.next();
    }
    return std::move(*batch);
  };
  for (int64_t i = 0; i < config.bench.warmup; ++i) {
    next_batch();
  }
  int64_t instances = 0;
  const auto start = Clock::now();
  for (int64_t i = 0; i < config.bench.steps; ++i) {
    instances += next_batch().indices.size(0);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
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

}  // namespace

int run_bench(const Args& args) {
  UEL_CHECK_CONFIG(
      !args.empty() && args.front()[0] != '-',
      "usage: uel bench <loader> [options]; `uel bench loader --help` lists the options");
  const std::string which = args.front();
  const Args rest(args.begin() + 1, args.end());
  if (which == "loader") {
    return bench_loader(rest);
  }
  UEL_CHECK_CONFIG(false, "unknown benchmark '{}'; available: loader", which);
  return 2;
}

}  // namespace uel::cli
