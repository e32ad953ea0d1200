#pragma once

// The run configuration shared by the subcommands that train, evaluate or benchmark: declared
// once (declare), checked once (validate) before any heavy work.

#include <cstdint>
#include <string>
#include <vector>

#include "uel/cli/options.h"
#include "uel/data/augment.h"
#include "uel/data/pipeline.h"
#include "uel/train/trainer.h"

namespace uel::cli {

struct BenchOptions {
  int64_t steps = 50;
  int64_t warmup = 5;
  std::string device = "auto";  // bench comm: auto|cpu|cuda
  int64_t ops = 0;              // bench step: list the N operators with the most self time
  int64_t min_bytes = 4 << 10;
  int64_t max_bytes = 256 << 20;
  std::vector<double> bank_rows = {1e5, 1.28e6};   // bench bank: N
  std::vector<double> bank_k = {4096, 65536};      // bench bank: K (0 = full softmax)
  std::vector<double> kmeans_rows = {60000, 1e6};  // bench kmeans: N
  std::vector<double> kmeans_k = {10, 100, 1000};  // bench kmeans: K
};

// Every section of a run (train::RunConfig) plus the benchmarks' options.
struct Config : train::RunConfig {
  BenchOptions bench;

  // Every option, with validate() as the options' validator; the declare_* parts serve
  // commands that need only some sections (they add the validator themselves).
  void declare(OptionSet& options);
  void declare_data(OptionSet& options);
  void declare_model(OptionSet& options);
  void declare_train(OptionSet& options);
  void declare_comm(OptionSet& options);
  void declare_bench(OptionSet& options);
  // Checks across options that every command needs, run once after parsing.
  void validate() const;
};

}  // namespace uel::cli
