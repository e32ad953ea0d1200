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

struct BenchOptions {
  int64_t steps = 50;
  int64_t warmup = 5;
};

struct Config {
  data::DataConfig data;
  data::AugmentConfig aug;
  TrainOptions train;
  BenchOptions bench;

  void declare(OptionSet& options);
  // Checks across options, run once after parsing.
  void validate() const;
};

}  // namespace uel::cli
