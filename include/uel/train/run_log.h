#pragma once

// What a run tells (DESIGN.md §1, Metrics): the interval accounting between log lines (losses,
// img/s, communication bytes and seconds, the method's metrics, the gradient noise scale), the
// progress line on a terminal, the log lines, RUN/metrics.jsonl and the train.trace timeline.
// The one place that knows metrics.jsonl's keys: a new metric is a line here.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "uel/comm/communicator.h"
#include "uel/comm/grad_sync.h"
#include "uel/core/clock.h"
#include "uel/core/trace.h"
#include "uel/eval/evaluator.h"
#include "uel/train/config.h"

namespace uel::train {

// One optimizer step's figures, averaged over ranks.
struct StepFigures {
  double loss = 0;
  // train.noise_scale: squared gradient norms, each rank's (mean over ranks) and the average's.
  double rank_grad_sq = 0;
  double mean_grad_sq = 0;
};

class RunLog {
 public:
  // `run_dir`: where metrics.jsonl goes (rank 0 writes it). A Tracer exists with train.trace.
  RunLog(std::string run_dir, const TrainConfig& train, std::shared_ptr<comm::Communicator> comm);

  Tracer* tracer() {
    return tracer_.get();
  }
  // Rank 0: keeps metrics.jsonl's rows up to `resumed_step` (a resumed run), or starts it empty.
  void open_metrics(std::optional<int64_t> resumed_step);
  // The clocks start (just after a barrier, so the ranks' traces line up); the run trains steps
  // first_step + 1 ... last_step, with `sync`'s bucket all-reduces counted in the bytes.
  void start(const comm::GradSync& sync, int64_t first_step, int64_t last_step);
  // After each optimizer step: counts it and draws the progress line when due.
  void step(int64_t epoch, int64_t global_step);
  // One step's figures, read from the device later than the step (in step order); an interval
  // has read all of its steps' figures.
  void add(const StepFigures& figures);
  // Ends the interval at `global_step`: a log line and a metrics row.
  void interval(
      int64_t epoch,
      int64_t global_step,
      double lr,
      const std::vector<std::pair<std::string, double>>& method_metrics);
  // An evaluation runs from evaluation_starts() to evaluation(): its time and its collectives
  // are left out of the interval's img/s and communication figures.
  void evaluation_starts();
  void evaluation(
      int64_t epoch,
      int64_t global_step,
      const eval::Evaluation& evaluation,
      const std::string& split);
  // Wall time since start(), as h:mm:ss.
  std::string elapsed() const;
  // Collective: gathers every rank's trace events to rank 0, which writes train.trace.
  void write_trace();

 private:
  void append_metrics(const std::string& json) const;
  std::string eta(int64_t global_step) const;

  std::string run_dir_;
  TrainConfig train_;
  std::shared_ptr<comm::Communicator> comm_;
  std::unique_ptr<Tracer> tracer_;  // null without train.trace
  const comm::GradSync* sync_ = nullptr;
  int64_t first_step_ = 0;
  int64_t last_step_ = 0;
  core::Clock::time_point run_start_, interval_start_, progress_shown_;
  double loss_sum_ = 0;
  int64_t interval_steps_ = 0;
  int64_t figures_read_ = 0;         // this interval's steps whose figures add() has seen
  std::optional<double> last_loss_;  // the last interval's, for the progress line
  double rank_grad_sq_sum_ = 0, mean_grad_sq_sum_ = 0;  // train.noise_scale, this interval
  comm::CommStats comm_before_, sync_before_;
  core::Clock::time_point evaluation_start_;
  comm::CommStats evaluation_comm_;  // comm_'s statistics when the evaluation started
  int64_t evaluation_bytes_ = 0;     // this interval's evaluations moved these
  double evaluation_comm_seconds_ = 0;
};

}  // namespace uel::train
