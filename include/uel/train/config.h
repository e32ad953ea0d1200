#pragma once

// A training run's options (DESIGN.md §1): one struct per INI section, the run's whole
// configuration, and the checks across sections that parsing cannot see alone.

#include <cstdint>
#include <string>

#include "uel/data/pipeline.h"
#include "uel/eval/evaluator.h"
#include "uel/methods/method.h"
#include "uel/models/embedding_net.h"
#include "uel/train/optimizer.h"
#include "uel/train/schedule.h"

namespace uel::train {

struct TrainConfig {
  int64_t batch_size = 128;  // global, in instances (each gives the method's views)
  // Micro-batches of batch_size / accumulate per step, their gradients summed locally and
  // all-reduced once (methods whose loss sums over samples: methods::sums_over_samples).
  int64_t accumulate = 1;
  int64_t epochs = 200;
  int64_t max_steps = 0;  // 0 = no cap; a capped run resumes into the same schedule
  ScheduleConfig schedule;
  OptimizerConfig optimizer;
  uint64_t seed = 0;
  int threads = 0;               // LibTorch threads per rank; 0 = cores / local ranks
  int64_t log_every = 50;        // steps
  int64_t checkpoint_every = 0;  // steps; 0 = at the end of every epoch
  int64_t keep = 2;
  std::string resume = "auto";  // auto | none | PATH of a checkpoint folder
  std::string device = "auto";  // auto | cpu | cuda
  // float64 trains in double precision: slow, but equivalence and debugging runs then differ
  // only by ~1e-15 instead of float32 rounding amplified over the steps.
  std::string precision = "float32";  // float32 | float64
  // Chrome-trace JSON of every rank's phases (data, forward, backward, bucket all-reduces,
  // optimizer, evaluation, checkpoints), written by rank 0 when the run ends; "" = no trace.
  std::string trace;
  int64_t trace_events = 200000;  // per rank; later events are dropped (and counted)
  // Log the gradient noise scale (train/noise_scale.h) every log_every steps, from each rank's
  // gradient and the average: 2+ ranks, no extra collective.
  bool noise_scale = false;
};

struct CommConfig {
  std::string backend = "auto";
  bool check_order = false;  // fingerprint every collective and compare across ranks (debug)
  double timeout_s = 300;
  double stop_timeout_s = 20;  // after a stop signal; Slurm's KillWait is 30 s by default
  double bucket_mb = 25;
  double first_bucket_mb = 1;
};

struct RunConfig {
  data::DataConfig data;
  data::AugmentConfig aug;
  models::ModelConfig model;
  std::string weights;  // optional initial weights (archive from save_weights or a checkpoint)
  TrainConfig train;
  methods::MethodConfig method;
  eval::EvalConfig eval;
  CommConfig comm;
  std::string resolved_ini;  // saved as RUN/config.ini
};

// Checks across sections that parsing cannot see alone.
void validate(const RunConfig& config);

}  // namespace uel::train
