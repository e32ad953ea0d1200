#include "uel/train/trainer.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/ranges.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/clock.h"
#include "uel/core/error.h"
#include "uel/core/files.h"
#include "uel/core/logging.h"
#include "uel/core/version.h"
#include "uel/train/checkpoint.h"

namespace uel::train {

namespace fs = std::filesystem;
using core::Clock;
using core::seconds_since;

namespace {

std::string fnv1a(const std::string& text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h = (h ^ c) * 1099511628211ULL;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace

Trainer::Trainer(RunConfig config, std::string run_dir)
    : config_(std::move(config)), run_dir_(std::move(run_dir)) {
  validate(config_);
  // LibTorch threads (train.threads) are process set-up: the commands call
  // runtime::configure_compute.
  comm::Watchdog::instance().set_timeout(config_.comm.timeout_s);
  device_ = comm::select_device(config_.train.device, config_.comm.backend == "mpi");
  comm::set_check_order(config_.comm.check_order);
  comm_ = comm::make_communicator(config_.comm.backend, device_);
  if (config_.comm.check_order && comm_->size() == 1)
    log_warn(
        "--comm.check_order=true compares the ranks' collectives; one rank has none to compare");
  // Ranks agree every step whether to stop: over a device communicator, reading the answer
  // would make the host wait for the step's kernels.
  control_ = comm_->device().is_cpu()
                 ? comm_
                 : comm::make_communicator(comm_->size() > 1 ? "mpi" : "local", c10::kCPU);

  // The loader serves micro-batches; an optimizer step takes train.accumulate of them.
  const int64_t micro_batch = config_.train.batch_size / config_.train.accumulate;
  // (Without accumulation the sampler's own check names the batch and the world size.)
  UEL_CHECK_CONFIG(
      config_.train.accumulate == 1 || micro_batch % comm_->size() == 0,
      "--train.batch_size {} over --train.accumulate {} leaves micro-batches of {}, not divisible "
      "by the world size {}; use a batch size that is a multiple of {}",
      config_.train.batch_size,
      config_.train.accumulate,
      micro_batch,
      comm_->size(),
      config_.train.accumulate * comm_->size());
  UEL_CHECK_CONFIG(
      !config_.train.noise_scale || comm_->size() > 1,
      "--train.noise_scale compares each rank's gradient with the ranks' average and needs 2 or "
      "more ranks; run it under mpirun -np 2 (or more)");
  input_ = data::open_train_data(
      config_.data,
      config_.aug,
      micro_batch,
      config_.train.seed,
      comm_->rank(),
      comm_->size(),
      device_,
      methods::views(config_.method));
  UEL_CHECK_CONFIG(
      steps_per_epoch() > 0,
      "an epoch of {} training items has fewer than --train.accumulate={} micro-batches of {}",
      input_.positions.size(),
      config_.train.accumulate,
      micro_batch);
  config_.model.in_channels = input_.dataset->info().channels;
  torch::manual_seed(config_.train.seed);  // the same initial weights on every world size
  model_ = models::EmbeddingNet(config_.model, comm_);
  dtype_ = config_.train.precision == "float64" ? at::kDouble : at::kFloat;
  model_->to(device_, dtype_);
  // A third of oneDNN's time in the Fashion-MNIST step went to layout reorders around the
  // convolutions (DNNL_VERBOSE); float64 runs through ATen's own kernels, not oneDNN.
  if (device_.is_cpu() && dtype_ == at::kFloat)
    models::use_channels_last(*model_);
  evaluator_ = std::make_unique<eval::Evaluator>(
      config_.eval,
      config_.data,
      input_,
      comm_,
      at::TensorOptions().device(device_).dtype(dtype_),
      config_.train.seed);
  methods::MethodSetup setup;
  setup.comm = comm_;
  setup.train_items = static_cast<int64_t>(input_.positions.size());
  setup.global_batch = config_.train.batch_size;
  setup.embedding_dim = config_.model.low_dim;
  setup.feature_dim = model_->feature_dim();
  setup.num_classes = input_.dataset->info().num_classes;
  setup.seed = config_.train.seed;
  setup.options = at::TensorOptions().device(device_).dtype(dtype_);
  method_ = methods::make_method(config_.method, setup);
  if (!config_.weights.empty()) {
    for (const auto& name : models::load_weights(*model_, config_.weights, /*strict=*/false)) {
      log_warn(
          "--model.weights: '{}' has no '{}'; it keeps its initial value", config_.weights, name);
    }
  }
  // The embedding net is the first parameter group, the method's follow in its order.
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& p : model_->named_parameters())
    params.emplace_back(p.key(), p.value());
  std::vector<OptimizerGroup> groups(1);
  groups[0].params = model_->parameters();
  groups[0].weight_decay = config_.train.optimizer.weight_decay;
  for (methods::ParamGroup& group : method_->parameter_groups()) {
    OptimizerGroup& g = groups.emplace_back();
    g.lr_scale = group.lr_scale;
    g.weight_decay = group.weight_decay.value_or(config_.train.optimizer.weight_decay);
    g.optimizer = group.optimizer.value_or("");
    g.momentum = group.momentum;
    g.own_lr = group.lr;
    for (auto& [name, tensor] : group.params) {
      g.params.push_back(tensor);
      params.emplace_back(fmt::format("method.{}", name), tensor);
    }
  }
  optimizer_ = std::make_unique<Optimizer>(
      config_.train.optimizer, config_.train.schedule.lr, std::move(groups));
  comm::GradSyncOptions sync_options;
  sync_options.bucket_mb = config_.comm.bucket_mb;
  sync_options.first_bucket_mb = config_.comm.first_bucket_mb;
  // Each rank normalises with its own batch: keep rank 0's running statistics everywhere.
  sync_options.broadcast_buffers = !config_.model.sync_bn;
  sync_options.measure_norms = config_.train.noise_scale;
  log_ = std::make_unique<RunLog>(run_dir_, config_.train, comm_);
  sync_options.tracer = log_->tracer();
  std::vector<at::Tensor> buffers;
  for (const auto& b : model_->named_buffers())
    buffers.push_back(b.value());
  grad_sync_ = std::make_unique<comm::GradSync>(params, buffers, *comm_, sync_options);
}

Trainer::~Trainer() = default;

at::Tensor Trainer::train_step(const std::function<data::Batch()>& next_batch, double lr) {
  optimizer_->set_lr(lr);
  model_->train();
  optimizer_->zero_grad();
  const int64_t micro_batches = config_.train.accumulate;
  // Summed on the device in float64 and read every train.log_every steps (read_figures): a read
  // here would make the host wait for the step's kernels.
  at::Tensor loss_sum = at::zeros({1}, at::TensorOptions().device(device_).dtype(at::kDouble));
  Tracer* const tracer = log_->tracer();
  Tracer::Span whole(tracer, "step");
  for (int64_t m = 0; m < micro_batches; ++m) {
    std::optional<data::Batch> batch;
    {
      Tracer::Span span(tracer, "data");
      batch = next_batch();
    }
    at::Tensor loss;
    {
      Tracer::Span span(tracer, "forward");
      loss = method_->loss(*batch, methods::StepContext{model_, global_step_, m});
      loss_sum += loss.detach().to(at::kDouble).view({1});
    }
    Tracer::Span span(tracer, "backward");
    // Each micro-batch's loss is a mean over its samples: the step's is the mean of theirs.
    const at::Tensor scaled = micro_batches > 1 ? loss / static_cast<double>(micro_batches) : loss;
    if (m + 1 < micro_batches) {
      auto local_only = grad_sync_->no_sync();
      scaled.backward();
    } else {
      scaled.backward();
    }
  }
  {
    Tracer::Span span(tracer, "grad_sync");
    grad_sync_->finish();
  }
  {
    Tracer::Span span(tracer, "optimizer");
    optimizer_->step();
    method_->after_step();
  }
  std::vector<at::Tensor> figures{loss_sum / static_cast<double>(micro_batches)};
  if (config_.train.noise_scale) {
    const comm::GradSync::SquaredNorms& norms = grad_sync_->squared_norms();
    figures.push_back(norms.local.view({1}));
    figures.push_back(norms.averaged.view({1}));
  }
  return at::cat(figures);
}

bool Trainer::agree_to_stop(bool requested) {
  if (control_->size() == 1)
    return requested;
  // One small collective per step, the same on every rank, in host memory.
  at::Tensor flag = at::full({1}, requested ? 1 : 0, at::kLong);
  control_->all_reduce(flag, comm::ReduceOp::kMax);
  return flag.item<int64_t>() > 0;
}

void Trainer::read_figures() {
  if (unread_figures_.empty())
    return;
  // One all-reduce for the steps since the last read; each step's figures are summed over the
  // ranks and divided as kAvg does, as when they were reduced step by step.
  at::Tensor rows = at::stack(unread_figures_);
  comm_->all_reduce(rows, comm::ReduceOp::kSum);
  rows = (rows.cpu() / comm_->size()).contiguous();
  const int64_t first = global_step_ - static_cast<int64_t>(unread_figures_.size()) + 1;
  unread_figures_.clear();
  const double* values = rows.data_ptr<double>();
  for (int64_t i = 0; i < rows.size(0); ++i, values += rows.size(1)) {
    StepFigures figures;
    figures.loss = values[0];
    UEL_CHECK(
        std::isfinite(figures.loss),
        "the loss is {} at step {}; training stopped, the last good checkpoint stays. Lower "
        "--train.lr or {}",
        figures.loss,
        first + i,
        method_->divergence_hint());
    if (config_.train.noise_scale) {
      figures.rank_grad_sq = values[1];
      figures.mean_grad_sq = values[2];
    }
    log_->add(figures);
  }
}

int64_t Trainer::steps_per_epoch() const {
  return input_.loader->steps_per_epoch() / config_.train.accumulate;
}

std::string Trainer::agreed_latest_checkpoint() {
  return comm_->broadcast_string(
      comm_->rank() == 0 ? latest_checkpoint(run_dir_).value_or("") : "", 0);
}

void Trainer::save_checkpoint() {
  read_figures();  // a non-finite loss stops the run before it reaches a checkpoint
  Tracer::Span span(log_->tracer(), "checkpoint");
  const std::string dir = checkpoint_dir(run_dir_, global_step_);
  // The position saved is the next step to run: after a whole epoch, the next epoch's start.
  int64_t epoch = epoch_, step_in_epoch = step_in_epoch_;
  if (step_in_epoch >= steps_per_epoch()) {
    ++epoch;
    step_in_epoch = 0;
  }
  fs::create_directories(dir);  // on every rank: a method's files may be per rank
  write_checkpoint_files(dir, [&] {
    if (comm_->rank() == 0) {
      models::save_weights(*model_, (fs::path(dir) / "model.pt").string());
      optimizer_->save((fs::path(dir) / "optim.pt").string());
      CheckpointState state;
      state.epoch = epoch;
      state.step_in_epoch = step_in_epoch;
      state.global_step = global_step_;
      state.seed = config_.train.seed;
      state.world_size = comm_->size();
      state.config_hash = fnv1a(config_.resolved_ini);
      state.git_sha = git_sha();
      write_state(dir, state);
      write_file_atomically((fs::path(dir) / "config.ini").string(), config_.resolved_ini);
    }
    method_->save(dir);
  });
  comm_->barrier();  // every rank's part is written before DONE
  if (comm_->rank() == 0) {
    write_checkpoint_files(dir, [&] { mark_done(dir); });
    prune_checkpoints(run_dir_, config_.train.keep);
  }
}

void Trainer::load_checkpoint(const std::string& dir, bool with_state) {
  UEL_CHECK_DATA(
      fs::exists(fs::path(dir) / "DONE"), "'{}' is not a complete checkpoint (no DONE)", dir);
  models::load_weights(*model_, (fs::path(dir) / "model.pt").string(), /*strict=*/true);
  const CheckpointState state = read_state(dir);
  method_->load(dir, state.world_size);
  if (!with_state)
    return;
  optimizer_->load((fs::path(dir) / "optim.pt").string());
  epoch_ = state.epoch;
  step_in_epoch_ = state.step_in_epoch;
  global_step_ = state.global_step;
  if (const std::optional<std::string> saved = saved_config(dir)) {
    const std::vector<std::string> changed = changed_options(*saved, config_.resolved_ini);
    if (!changed.empty())
      log_warn(
          "resuming {} with options changed since it was saved: {}", dir, fmt::join(changed, ", "));
  } else if (state.config_hash != fnv1a(config_.resolved_ini)) {
    log_warn("resuming {} with a configuration that differs from the one it was saved with", dir);
  }
  if (state.world_size != comm_->size()) {
    log_info("resuming a {}-rank checkpoint on {} ranks", state.world_size, comm_->size());
  }
}

eval::Evaluation Trainer::evaluate() {
  Tracer::Span span(log_->tracer(), "evaluation");
  return evaluator_->evaluate(
      model_, config_.eval.features == "bank" ? method_->train_features() : at::Tensor());
}

bool Trainer::resume() {
  const std::string& resume = config_.train.resume;
  std::string from = resume == "none" ? "" : resume;
  if (resume == "auto") {
    // Rank 0 decides for everyone: ranks that see the file system at different moments (DONE
    // written while they look, a lagging network file system) must not resume differently.
    from = agreed_latest_checkpoint();
    // A job killed while it wrote or pruned checkpoints left extra folders; none is being
    // written now, and `from` is the newest complete one, which stays.
    if (comm_->rank() == 0)
      prune_checkpoints(run_dir_, config_.train.keep, /*idle=*/true);
  }
  if (from.empty())
    return false;
  load_checkpoint(from, /*with_state=*/true);
  log_info("resumed from {} (epoch {}, step {})", from, epoch_, global_step_);
  return true;
}

RunEnd Trainer::run(const std::function<bool()>& stop_requested) {
  if (comm_->rank() == 0) {
    fs::create_directories(run_dir_);
    write_file_atomically((fs::path(run_dir_) / "config.ini").string(), config_.resolved_ini);
  }
  const bool resumed = resume();
  log_->open_metrics(resumed ? std::optional<int64_t>(global_step_) : std::nullopt);
  comm_->barrier();
  const int64_t total_steps = steps_per_epoch() * config_.train.epochs;
  const int64_t last_step =
      config_.train.max_steps > 0 ? std::min(total_steps, config_.train.max_steps) : total_steps;
  log_info(
      "training {} on {} rank(s) ({}), {} steps per epoch of {} instances, {} epochs",
      method_->name(),
      comm_->size(),
      device_.str(),
      steps_per_epoch(),
      config_.train.batch_size,
      config_.train.epochs);
  const int64_t first_step = global_step_;
  log_->start(*grad_sync_, first_step, last_step);  // just after a barrier: the traces line up

  bool stopped = false;
  for (; epoch_ < config_.train.epochs && global_step_ < last_step; ++epoch_, step_in_epoch_ = 0) {
    stopped = run_epoch(last_step, stop_requested);
    if (step_in_epoch_ < steps_per_epoch())
      break;  // stopped by a request or by max_steps inside the epoch
    // A stop on the epoch's last step still ends the epoch: the resumed run starts the next one
    // and would never evaluate this one.
    end_epoch();
    if (stopped)
      break;
  }
  // A run stopped by max_steps or a request leaves a checkpoint to resume from. Saving is
  // collective, so rank 0 decides for everyone (a rank that missed DONE would otherwise save
  // alone and wait).
  if (agreed_latest_checkpoint() != checkpoint_dir(run_dir_, global_step_))
    save_checkpoint();
  log_->write_trace();
  if (stopped) {
    // No rank leaves before rank 0 wrote DONE: launchers end the other ranks when one exits.
    comm_->barrier();
    log_info(
        "stopped on request after step {}/{} ({}); checkpoint {}",
        global_step_,
        last_step,
        log_->elapsed(),
        checkpoint_dir(run_dir_, global_step_));
    return RunEnd::kStopped;
  }
  log_info("done: {} steps in {}", global_step_ - first_step, log_->elapsed());
  return RunEnd::kCompleted;
}

bool Trainer::run_epoch(int64_t last_step, const std::function<bool()>& stop_requested) {
  start_epoch(epoch_, step_in_epoch_);
  const auto next_batch = [&] {
    std::optional<data::Batch> batch = input_.loader->next();
    UEL_CHECK(batch.has_value(), "the loader ended epoch {} early", epoch_);
    return std::move(*batch);
  };
  const int64_t steps_per_epoch = this->steps_per_epoch();
  while (global_step_ < last_step && step_in_epoch_ < steps_per_epoch) {
    const double epoch_position = epoch_ + static_cast<double>(step_in_epoch_) / steps_per_epoch;
    const double lr = learning_rate(
        config_.train.schedule, epoch_position, config_.train.epochs, config_.train.batch_size);
    unread_figures_.push_back(train_step(next_batch, lr));
    const bool stop = agree_to_stop(stop_requested && stop_requested());
    ++global_step_;
    ++step_in_epoch_;
    log_->step(epoch_, global_step_);
    if (global_step_ % config_.train.log_every == 0 || global_step_ == last_step) {
      read_figures();
      log_->interval(epoch_, global_step_, lr, method_->step_metrics());
    }
    if (config_.train.checkpoint_every > 0 && global_step_ % config_.train.checkpoint_every == 0)
      save_checkpoint();
    if (stop && global_step_ < last_step)
      return true;
  }
  return false;
}

void Trainer::end_epoch() {
  if (config_.train.checkpoint_every == 0)
    save_checkpoint();
  if (config_.eval.every > 0 && (epoch_ + 1) % config_.eval.every == 0) {
    log_->evaluation_starts();
    const eval::Evaluation evaluation = evaluate();
    log_->evaluation(epoch_, global_step_, evaluation, evaluator_->split());
  }
}

void Trainer::start_epoch(int64_t epoch, int64_t first_step) {
  Tracer::Span span(log_->tracer(), "start_epoch");
  if (train_labels_.empty()) {
    for (const int64_t position : input_.positions)
      train_labels_.push_back(input_.dataset->labels()[position]);
  }
  method_->start_epoch(methods::EpochContext{
      model_,
      epoch,
      first_step,
      [this](const std::string& layer) {
        return evaluator_->embed_layer(model_, *input_.dataset, input_.positions, layer);
      },
      train_labels_});
  if (auto sampler = method_->sampler())
    input_.loader->set_sampler(std::move(sampler));
  input_.loader->start_epoch(epoch, first_step * config_.train.accumulate);
}

StepBenchmark Trainer::benchmark(int64_t steps, int64_t warmup, bool profile_ops) {
  data::Loader& loader = *input_.loader;
  start_epoch(0, 0);
  const double lr = config_.train.schedule.lr;
  const auto next_batch = [&] { return loader.next_cycling(); };
  for (int64_t i = 0; i < warmup; ++i)
    train_step(next_batch, lr);
  comm_->barrier();
  const comm::GradSync::Timing before = grad_sync_->timing();
  std::optional<runtime::OpProfile> profile;
  if (profile_ops)
    profile.emplace();
  const auto start = Clock::now();
  for (int64_t i = 0; i < steps; ++i)
    train_step(next_batch, lr);
  StepBenchmark result;
  result.step_seconds = seconds_since(start) / steps;
  if (profile) {
    result.ops = profile->ops();
    for (runtime::OpTime& op : result.ops)
      op.self_seconds /= steps;
    result.inside_ops_seconds = profile->inside_seconds() / steps;
    profile.reset();
  }
  comm_->barrier();
  result.img_per_s = steps * config_.train.batch_size / seconds_since(start);
  const comm::GradSync::Timing after = grad_sync_->timing();
  result.buckets = static_cast<int64_t>(grad_sync_->bucket_layout().size());
  result.gradient_bytes = grad_sync_->gradient_bytes();
  result.timed_all_reduce = grad_sync_->measures_timing();
  auto per_step = [&](double total) {
    return comm_->all_reduce_scalar(total / steps, comm::ReduceOp::kAvg);
  };
  result.all_reduce_seconds = per_step(after.all_reduce_seconds - before.all_reduce_seconds);
  result.exposed_seconds = per_step(after.exposed_seconds - before.exposed_seconds);
  return result;
}

}  // namespace uel::train
