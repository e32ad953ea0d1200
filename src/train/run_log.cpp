#include "uel/train/run_log.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "uel/core/error.h"
#include "uel/core/files.h"
#include "uel/core/logging.h"
#include "uel/train/noise_scale.h"

namespace uel::train {

namespace fs = std::filesystem;
using core::Clock;
using core::seconds_since;

namespace {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

}  // namespace

RunLog::RunLog(
    std::string run_dir, const TrainConfig& train, std::shared_ptr<comm::Communicator> comm)
    : run_dir_(std::move(run_dir)), train_(train), comm_(std::move(comm)) {
  if (!train_.trace.empty())
    tracer_ = std::make_unique<Tracer>(train_.trace_events);
}

void RunLog::open_metrics(std::optional<int64_t> resumed_step) {
  if (comm_->rank() != 0)
    return;
  const fs::path path = fs::path(run_dir_) / "metrics.jsonl";
  if (!resumed_step) {
    std::error_code ec;
    fs::remove(path, ec);
    return;
  }
  if (!fs::exists(path))
    return;
  std::ifstream in(path);
  std::string line, kept;
  static const std::regex step_field("\"step\": ([0-9]+)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, step_field) && std::stoll(m[1]) > *resumed_step)
      continue;
    kept += line + "\n";
  }
  in.close();
  write_file_atomically(path.string(), kept);
}

void RunLog::start(const comm::GradSync& sync, int64_t first_step, int64_t last_step) {
  sync_ = &sync;
  first_step_ = first_step;
  last_step_ = last_step;
  run_start_ = interval_start_ = progress_shown_ = Clock::now();
  if (tracer_)
    tracer_->set_origin(run_start_);
  comm_before_ = comm_->stats();
  sync_before_ = sync.comm_stats();
}

std::string RunLog::eta(int64_t global_step) const {
  const double done = static_cast<double>(global_step - first_step_);
  return format_duration(seconds_since(run_start_) / done * (last_step_ - global_step));
}

std::string RunLog::elapsed() const {
  return format_duration(seconds_since(run_start_));
}

void RunLog::add(const StepFigures& figures) {
  loss_sum_ += figures.loss;
  ++figures_read_;
  rank_grad_sq_sum_ += figures.rank_grad_sq;
  mean_grad_sq_sum_ += figures.mean_grad_sq;
}

void RunLog::step(int64_t epoch, int64_t global_step) {
  ++interval_steps_;
  // The first and the last step always draw (a user sees the line start and its final state,
  // and what is drawn does not depend on the machine's speed); others at most every 0.25 s.
  // The loss shown is the last interval's: reading this one's would make the host wait for
  // the device.
  if (progress_line_enabled() && (global_step == first_step_ + 1 || global_step == last_step_ ||
                                  seconds_since(progress_shown_) >= 0.25)) {
    show_progress(fmt::format(
        "epoch {} step {}/{}{} {:.0f} img/s ETA {}",
        epoch,
        global_step,
        last_step_,
        last_loss_ ? fmt::format(" loss {:.4f}", *last_loss_) : std::string(),
        interval_steps_ * train_.batch_size / seconds_since(interval_start_),
        eta(global_step)));
    progress_shown_ = Clock::now();
  }
}

void RunLog::interval(
    int64_t epoch,
    int64_t global_step,
    double lr,
    const std::vector<std::pair<std::string, double>>& method_metrics) {
  const double seconds = seconds_since(interval_start_);
  const double img_per_s = interval_steps_ * train_.batch_size / seconds;
  const comm::CommStats now = comm_->stats(), sync_now = sync_->comm_stats();
  const int64_t bytes = now.total_bytes() - comm_before_.total_bytes() + sync_now.total_bytes() -
                        sync_before_.total_bytes() - evaluation_bytes_;
  const double comm_seconds = now.total_seconds() - comm_before_.total_seconds() +
                              sync_now.total_seconds() - sync_before_.total_seconds() -
                              evaluation_comm_seconds_;
  UEL_CHECK(
      figures_read_ == interval_steps_,
      "the interval has {} steps but the figures of {}",
      interval_steps_,
      figures_read_);
  const double mean_loss = loss_sum_ / interval_steps_;
  last_loss_ = mean_loss;
  std::string method_text, method_json;
  for (const auto& [name, value] : method_metrics) {
    method_text += fmt::format(" {} {:.4f}", name, value);
    method_json += fmt::format(R"(, "{}": {:.9g})", name, value);
  }
  if (train_.noise_scale) {
    const auto batch = static_cast<double>(train_.batch_size);
    const NoiseScale noise = gradient_noise_scale(
        rank_grad_sq_sum_ / interval_steps_,
        mean_grad_sq_sum_ / interval_steps_,
        batch / comm_->size(),
        batch);
    const std::string b_simple =
        noise.b_simple ? fmt::format("{:.1f}", *noise.b_simple) : std::string("null");
    method_text += fmt::format(" noise scale {}", b_simple);
    method_json += fmt::format(
        R"(, "noise_scale": {}, "grad_sq": {:.9g}, "grad_trace": {:.9g})",
        b_simple,
        noise.gradient_sq,
        noise.trace);
    rank_grad_sq_sum_ = mean_grad_sq_sum_ = 0;
  }
  log_info(
      "epoch {} step {}/{} loss {:.4f}{} lr {:.5f} {:.0f} img/s ETA {}",
      epoch,
      global_step,
      last_step_,
      mean_loss,
      method_text,
      lr,
      img_per_s,
      eta(global_step));
  // The loss in the shortest text that reads back as the same double: float64 runs on two
  // devices compare to 1e-9 and more.
  append_metrics(fmt::format(
      R"({{"step": {}, "epoch": {}, "loss": {}, "lr": {:.9g}, "img_per_s": {:.1f}, )"
      R"("comm_bytes_per_step": {}, "comm_seconds": {:.6f}, "ranks": {}, )"
      R"("elapsed_s": {:.3f}{}}})",
      global_step,
      epoch,
      mean_loss,
      lr,
      img_per_s,
      bytes / interval_steps_,
      comm_seconds,
      comm_->size(),
      seconds_since(run_start_),
      method_json));
  loss_sum_ = 0;
  interval_steps_ = figures_read_ = 0;
  comm_before_ = now;
  sync_before_ = sync_now;
  evaluation_bytes_ = 0;
  evaluation_comm_seconds_ = 0;
  interval_start_ = Clock::now();
}

void RunLog::evaluation_starts() {
  evaluation_start_ = Clock::now();
  evaluation_comm_ = comm_->stats();
}

void RunLog::evaluation(
    int64_t epoch,
    int64_t global_step,
    const eval::Evaluation& evaluation,
    const std::string& split) {
  const double seconds = seconds_since(evaluation_start_);
  const comm::CommStats now = comm_->stats();
  evaluation_bytes_ += now.total_bytes() - evaluation_comm_.total_bytes();
  evaluation_comm_seconds_ += now.total_seconds() - evaluation_comm_.total_seconds();
  log_info("epoch {} {} ({:.1f} s)", epoch, evaluation.summary(), seconds);
  append_metrics(fmt::format(
      R"({{"step": {}, "epoch": {}, {}, "split": "{}", "elapsed_s": {:.3f}}})",
      global_step,
      epoch,
      evaluation.json_fields(),
      split,
      seconds_since(run_start_)));
  // img/s counts training time: the steps of this interval before the evaluation stay in it.
  interval_start_ += Clock::now() - evaluation_start_;
}

void RunLog::append_metrics(const std::string& json) const {
  if (comm_->rank() != 0)
    return;
  std::ofstream out(fs::path(run_dir_) / "metrics.jsonl", std::ios::app);
  out << json << "\n";
}

void RunLog::write_trace() {
  if (!tracer_)
    return;
  const std::string mine = tracer_->json_events(comm_->rank());
  const at::Tensor bytes =
      at::from_blob(const_cast<char*>(mine.data()), {static_cast<int64_t>(mine.size())}, at::kByte)
          .to(comm_->device());
  const at::Tensor all = comm_->all_gather_v(bytes).cpu();
  const double dropped =
      comm_->all_reduce_scalar(static_cast<double>(tracer_->dropped()), comm::ReduceOp::kSum);
  if (comm_->rank() != 0)
    return;
  std::string events(reinterpret_cast<const char*>(all.data_ptr<uint8_t>()), all.numel());
  std::string names;
  for (int r = 0; r < comm_->size(); ++r) {
    names += fmt::format(
        "{0}"
        R"({{"name": "process_name", "ph": "M", "pid": {1}, "args": {{"name": "rank {1}"}}}},)"
        R"({{"name": "thread_name", "ph": "M", "pid": {1}, "tid": {2}, "args": {{"name": "trainer"}}}},)"
        R"({{"name": "thread_name", "ph": "M", "pid": {1}, "tid": {3}, "args": {{"name": "gradient all-reduce"}}}})",
        r == 0 ? "" : ",\n",
        r,
        Tracer::kMainThread,
        Tracer::kGradSyncThread);
  }
  const fs::path path(train_.trace);
  if (path.has_parent_path())
    fs::create_directories(path.parent_path());
  std::ofstream out(path);
  // Every event ends with ",\n"; the metadata events close the list.
  out << R"({"displayTimeUnit": "ms", "traceEvents": [)"
      << "\n"
      << events << names << "\n]}\n";
  UEL_CHECK_DATA(out.good(), "could not write the trace to '{}'", train_.trace);
  log_info(
      "trace of {} rank(s) written to {}{}",
      comm_->size(),
      train_.trace,
      dropped > 0 ? fmt::format(" ({} events dropped past --train.trace_events)", dropped) : "");
}

}  // namespace uel::train
