#pragma once

// The run configuration shared by the subcommands that train, evaluate or benchmark: declared
// once (declare), checked once (validate) before any heavy work.

#include <cstdint>
#include <string>

#include "uel/cli/options.h"
#include "uel/data/augment.h"
#include "uel/data/pipeline.h"

namespace uel::cli {

struct TrainOptions {
  int64_t batch_size = 128;  // global, in instances
  uint64_t seed = 0;
  int threads = 0;  // LibTorch threads per rank; 0 = cores / local ranks
};

struct CommOptions {
  std::string backend = "auto";  // auto|mpi|nccl|local
  double timeout_s = 300;        // a collective running longer ends the job
  double bucket_mb = 25;         // gradient buckets
  double first_bucket_mb = 1;
};

struct BenchOptions {
  int64_t steps = 50;
  int64_t warmup = 5;
  std::string device = "auto";  // bench comm: auto|cpu|cuda
  int64_t min_bytes = 4 << 10;
  int64_t max_bytes = 256 << 20;
};

struct Config {
  data::DataConfig data;
  data::AugmentConfig aug;
  TrainOptions train;
  CommOptions comm;
  BenchOptions bench;

  // Every option; the declare_* parts serve commands that need only some sections.
  void declare(OptionSet& options);
  void declare_data(OptionSet& options);
  void declare_train(OptionSet& options);
  void declare_comm(OptionSet& options);
  void declare_bench(OptionSet& options);
  // Checks across options, run once after parsing.
  void validate() const;
};

}  // namespace uel::cli
