#pragma once

// The one place that orchestrates a training step (DESIGN.md §2): sampler -> HDF5 read ->
// augmented views -> the method's loss (embedding net, collectives through the communicator) ->
// backward (GradSync all-reduces buckets as they fill) -> optimizer -> the method's after-step work
// -> metrics, checkpoints, kNN evaluation. It knows methods only through methods::Method.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uel/comm/communicator.h"
#include "uel/comm/grad_sync.h"
#include "uel/data/pipeline.h"
#include "uel/eval/evaluator.h"
#include "uel/methods/method.h"
#include "uel/models/embedding_net.h"
#include "uel/runtime/op_profile.h"
#include "uel/train/config.h"
#include "uel/train/optimizer.h"
#include "uel/train/run_log.h"

namespace uel::train {

// Full training steps timed by Trainer::benchmark; seconds are per step, averaged over ranks.
struct StepBenchmark {
  double img_per_s = 0;
  int64_t buckets = 0;
  int64_t gradient_bytes = 0;     // all-reduced per step
  bool timed_all_reduce = false;  // false on NCCL, whose all-reduces run on the device
  double all_reduce_seconds = 0;  // inside the bucket all-reduces
  double exposed_seconds = 0;     // of those, not hidden behind backward
  double step_seconds = 0;        // this rank's wall time per step
  // With profile_ops: this rank's operators, self seconds per step, and the time inside them.
  std::vector<runtime::OpTime> ops;
  double inside_ops_seconds = 0;
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
  // step the ranks agree whether any rank's `stop_requested` holds; if so all stop after that
  // step, write a checkpoint and return kStopped. A stop on an epoch's last step still ends the
  // epoch (its checkpoint and evaluation): a resumed run neither misses nor repeats them.
  RunEnd run(const std::function<bool()>& stop_requested = {});
  // `steps` full training steps after `warmup` untimed ones; profile_ops: where the timed steps
  // spend their time, per operator (runtime::OpProfile; its callbacks are timed with the steps).
  StepBenchmark benchmark(int64_t steps, int64_t warmup, bool profile_ops = false);
  // Loads weights and the method's files (and, with_state, optimizer state and position) of a
  // checkpoint folder saved on any world size.
  void load_checkpoint(const std::string& dir, bool with_state);
  // eval.protocol on the query set (collective, eval::Evaluator::evaluate), with the method's
  // own features of the training set as the kNN gallery when eval.features = bank.
  eval::Evaluation evaluate();

  models::EmbeddingNet& model() {
    return model_;
  }
  const methods::Method& method() const {
    return *method_;
  }
  const eval::Evaluator& evaluator() const {
    return *evaluator_;
  }

 private:
  // Runs the method on train.accumulate batches from `next_batch`, then one optimizer step.
  // Returns the step's figures on the device, unread: float64 [loss] (and with
  // train.noise_scale the two squared gradient norms).
  at::Tensor train_step(const std::function<data::Batch()>& next_batch, double lr);
  // Whether any rank's request to stop holds (collective, every step, in host memory).
  bool agree_to_stop(bool requested);
  // Reduces the unread figures over the ranks (one collective), stops a run whose loss is not
  // finite, and hands them to the run log; before each log line and checkpoint.
  void read_figures();
  // Loads the checkpoint train.resume names (auto: the newest complete one); false if none.
  bool resume();
  // The steps of the epoch epoch_ from step_in_epoch_ on; true if a stop request ended it.
  bool run_epoch(int64_t last_step, const std::function<bool()>& stop_requested);
  // After an epoch's last step: its checkpoint (train.checkpoint_every = 0), its evaluation.
  void end_epoch();
  // Optimizer steps per epoch (the loader's steps are micro-batches).
  int64_t steps_per_epoch() const;
  // The method's start of an epoch (it may bring its own sampler), then the loader's.
  void start_epoch(int64_t epoch, int64_t first_step);
  void save_checkpoint();
  // The newest complete checkpoint as rank 0 sees it ("" if none), on every rank: ranks that
  // read the file system at different moments must not take different collective paths.
  std::string agreed_latest_checkpoint();

  RunConfig config_;
  std::string run_dir_;
  c10::Device device_{c10::kCPU};
  at::ScalarType dtype_ = at::kFloat;
  std::shared_ptr<comm::Communicator> comm_;
  // The stop agreement's: comm_ on the CPU, else an MPI communicator in host memory.
  std::shared_ptr<comm::Communicator> control_;
  data::TrainData input_;
  std::vector<int64_t> train_labels_;  // of input_.positions, for the methods' diagnostics
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<eval::Evaluator> evaluator_;
  models::EmbeddingNet model_{nullptr};
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<comm::GradSync> grad_sync_;
  std::unique_ptr<methods::Method> method_;
  int64_t epoch_ = 0;
  int64_t step_in_epoch_ = 0;
  int64_t global_step_ = 0;
  std::vector<at::Tensor> unread_figures_;  // train_step's, of the steps up to global_step_
};

}  // namespace uel::train
