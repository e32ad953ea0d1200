#pragma once

// The one place that orchestrates a training step (DESIGN.md §2): sampler -> HDF5 read ->
// augmented views -> the method's loss (embedding net, collectives through the communicator) ->
// backward (GradSync all-reduces buckets as they fill) -> optimizer -> the method's after-step work
// -> metrics, checkpoints, kNN evaluation. It knows methods only through methods::Method.

#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uel/comm/communicator.h"
#include "uel/comm/grad_sync.h"
#include "uel/core/trace.h"
#include "uel/data/pipeline.h"
#include "uel/eval/knn.h"
#include "uel/eval/recall.h"
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

struct EvalConfig {
  int64_t every = 1;  // epochs; 0 = never during training
  // Comma-separated: knn (seen categories: test queries against the training set), recall
  // (Recall@K within the test set) and nmi (k-means of the test set against its labels).
  std::string protocol = "knn";
  std::vector<double> recall_k = {1, 2, 4, 8};
  // kNN gallery: "" = the training set, or another dataset file (STL-10 trains on
  // train+unlabeled and votes with the labelled train split).
  std::string gallery;
  // Training-set features of the kNN: "recompute" embeds the training set (eval transform);
  // "bank" uses the features the method keeps, as they are (nce's memory bank; lemniscate's
  // monitor, no extra pass).
  std::string features = "recompute";
  eval::KnnConfig knn;
  int64_t batch_size = 256;
};

struct CommConfig {
  std::string backend = "auto";
  bool check_order = false;  // fingerprint every collective and compare across ranks (debug)
  double timeout_s = 300;
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
  EvalConfig eval;
  CommConfig comm;
  std::string resolved_ini;  // saved as RUN/config.ini
};

// Checks across sections that parsing cannot see alone.
void validate(const RunConfig& config);

// Which protocols eval.protocol asks for ("knn,recall,nmi"); ConfigError naming the valid ones.
struct Protocols {
  bool knn = false;
  bool recall = false;
  bool nmi = false;
};
Protocols parse_protocols(const std::string& list);

// The figures of one evaluation; a protocol not asked for is absent.
struct Evaluation {
  std::optional<eval::KnnResult> knn;
  std::optional<eval::RecallResult> recall;
  std::optional<double> nmi;  // arithmetic-mean normalisation (sklearn's default)
  std::optional<double> ari;
  eval::KnnConfig knn_config;
  int64_t queries = 0;  // test items evaluated
  // "knn_top1": ..., "recall@1": ..., "nmi": ... (JSON object members, no braces).
  std::string json_fields() const;
  std::string summary() const;  // one line for the log
};

// Full training steps timed by Trainer::benchmark; seconds are per step, averaged over ranks.
struct StepBenchmark {
  double img_per_s = 0;
  int64_t buckets = 0;
  int64_t gradient_bytes = 0;     // all-reduced per step
  bool timed_all_reduce = false;  // false on NCCL, whose all-reduces run on the device
  double all_reduce_seconds = 0;  // inside the bucket all-reduces
  double exposed_seconds = 0;     // of those, not hidden behind backward
};

// How Trainer::run ended: the schedule (or train.max_steps) is done, or a stop request ended it
// early with a checkpoint to resume from.
enum class RunEnd { kCompleted, kStopped };

class Trainer {
 public:
  // Collective: every rank constructs it (MPI must be initialised).
  Trainer(RunConfig config, std::string run_dir);
  ~Trainer();

  // Trains to the end of the schedule or to train.max_steps, resuming per train.resume. Every
  // step the ranks agree whether any rank's `stop_requested` holds (inside the step's loss
  // all-reduce); if so all stop after that step, write a checkpoint and return kStopped. The
  // evaluation of an epoch whose last step was the stopping point is skipped.
  RunEnd run(const std::function<bool()>& stop_requested = {});
  // `steps` full training steps after `warmup` untimed ones.
  StepBenchmark benchmark(int64_t steps, int64_t warmup);
  // Loads weights and the method's files (and, with_state, optimizer state and position) of a
  // checkpoint folder saved on any world size.
  void load_checkpoint(const std::string& dir, bool with_state);
  // The protocols of eval.protocol on the test set (collective): weighted kNN against the
  // gallery (eval transform, or the method's own features with eval.features = bank),
  // Recall@K within the test set, NMI and ARI of a k-means with as many clusters as test classes.
  Evaluation evaluate();

  models::EmbeddingNet& model() {
    return model_;
  }
  const methods::Method& method() const {
    return *method_;
  }
  // L2-normalised embeddings of this rank's shard of `positions` in `dataset`.
  at::Tensor embed(const data::ImageDataset& dataset, const std::vector<int64_t>& positions);

 private:
  // The step's loss averaged over ranks, and whether any rank asked to stop.
  struct StepEnd {
    double loss = 0;
    bool stop = false;
    // train.noise_scale: squared gradient norms, each rank's (mean over ranks) and the average's.
    double rank_grad_sq = 0;
    double mean_grad_sq = 0;
  };
  // Runs the method on train.accumulate batches from `next_batch`, then one optimizer step.
  StepEnd train_step(
      const std::function<data::Batch()>& next_batch, double lr, bool stop_requested = false);
  // Optimizer steps per epoch (the loader's steps are micro-batches).
  int64_t steps_per_epoch() const;
  // The method's start of an epoch (it may bring its own sampler), then the loader's.
  void start_epoch(int64_t epoch, int64_t first_step);
  void save_checkpoint();
  // The newest complete checkpoint as rank 0 sees it ("" if none), on every rank: ranks that
  // read the file system at different moments must not take different collective paths.
  std::string agreed_latest_checkpoint();
  void log_metrics(const std::string& json);
  // Collective: gathers every rank's events to rank 0, which writes train.trace.
  void write_trace();
  void truncate_metrics_after(int64_t step);

  RunConfig config_;
  std::string run_dir_;
  c10::Device device_{c10::kCPU};
  at::ScalarType dtype_ = at::kFloat;
  std::shared_ptr<comm::Communicator> comm_;
  data::TrainData input_;
  std::shared_ptr<const data::ImageDataset> test_;
  std::vector<int64_t> test_positions_;
  std::shared_ptr<const data::ImageDataset> gallery_;  // kNN gallery: the training set by default
  std::vector<int64_t> gallery_positions_;
  std::vector<int64_t> train_labels_;  // of input_.positions, for the methods' diagnostics
  models::EmbeddingNet model_{nullptr};
  std::unique_ptr<Tracer> tracer_;  // null without train.trace
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<comm::GradSync> grad_sync_;
  std::unique_ptr<methods::Method> method_;
  int64_t epoch_ = 0;
  int64_t step_in_epoch_ = 0;
  int64_t global_step_ = 0;
};

}  // namespace uel::train
