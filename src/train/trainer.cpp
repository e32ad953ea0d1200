#include "uel/train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <fmt/ranges.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "uel/cluster/kmeans.h"
#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/core/files.h"
#include "uel/core/logging.h"
#include "uel/core/shard.h"
#include "uel/core/version.h"
#include "uel/eval/cluster_metrics.h"
#include "uel/train/checkpoint.h"
#include "uel/train/noise_scale.h"

namespace uel::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string fnv1a(const std::string& text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h = (h ^ c) * 1099511628211ULL;
  }
  return fmt::format("{:016x}", h);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

}  // namespace

Protocols parse_protocols(const std::string& list) {
  Protocols out;
  std::stringstream in(list);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name == "knn") {
      out.knn = true;
    } else if (name == "recall") {
      out.recall = true;
    } else {
      UEL_CHECK_CONFIG(
          name == "nmi",
          "--eval.protocol: '{}' is not a protocol; give a comma-separated list of knn, recall, "
          "nmi",
          name);
      out.nmi = true;
    }
  }
  UEL_CHECK_CONFIG(
      out.knn || out.recall || out.nmi,
      "--eval.protocol is empty; give a comma-separated list of knn, recall, nmi");
  return out;
}

std::string Evaluation::json_fields() const {
  std::vector<std::string> fields;
  if (knn) {
    fields.push_back(fmt::format(
        R"("knn_top1": {:.4f}, "knn_top5": {:.4f}, "k": {}, "tau": {})",
        knn->top1,
        knn->top5,
        knn_config.k,
        knn_config.tau));
  }
  if (recall) {
    for (size_t i = 0; i < recall->ks.size(); ++i)
      fields.push_back(fmt::format(R"("recall@{}": {:.4f})", recall->ks[i], recall->recall[i]));
  }
  if (nmi)
    fields.push_back(fmt::format(R"("nmi": {:.6f}, "ari": {:.6f})", *nmi, *ari));
  fields.push_back(fmt::format(R"("queries": {})", queries));
  return fmt::format("{}", fmt::join(fields, ", "));
}

std::string Evaluation::summary() const {
  std::vector<std::string> parts;
  if (knn) {
    parts.push_back(fmt::format(
        "kNN top-1 {:.2f}% top-5 {:.2f}% (k={}, tau={})",
        knn->top1,
        knn->top5,
        knn_config.k,
        knn_config.tau));
  }
  if (recall) {
    std::vector<std::string> r;
    for (size_t i = 0; i < recall->ks.size(); ++i)
      r.push_back(fmt::format("R@{} {:.2f}%", recall->ks[i], recall->recall[i]));
    parts.push_back(fmt::format("{}", fmt::join(r, " ")));
  }
  if (nmi)
    parts.push_back(fmt::format("NMI {:.4f} ARI {:.4f}", *nmi, *ari));
  return fmt::format("{} on {} test items", fmt::join(parts, ", "), queries);
}

void validate(const RunConfig& c) {
  methods::validate(c.method);
  UEL_CHECK_CONFIG(
      c.eval.features == "recompute" ||
          (c.eval.features == "bank" && methods::keeps_train_features(c.method)),
      "--eval.features=bank needs the memory bank of a method that keeps one; --train.method={} "
      "keeps none. Use recompute",
      c.method.name);
  // The noise scale reads each rank's gradient as an independent draw at batch / ranks.
  UEL_CHECK_CONFIG(
      !c.train.noise_scale || !c.model.sync_bn,
      "--train.noise_scale needs --model.sync_bn=false: SyncBatchNorm's shared batch statistics "
      "carry every rank's samples into each rank's gradient (their sum cancels what the "
      "normalisation removes), which biases the estimate down to negative |G|^2");
  UEL_CHECK_CONFIG(
      !c.train.noise_scale || methods::rank_gradients_independent(c.method),
      "--train.noise_scale needs each rank's gradient to come from its own samples; the loss of "
      "--train.method={}{} backpropagates into other ranks' samples. Measure it with isif or nce",
      c.method.name,
      c.method.name == "isif" ? " with --isif.key_grad=true" : "");
  UEL_CHECK_CONFIG(c.train.epochs > 0, "--train.epochs must be positive, got {}", c.train.epochs);
  UEL_CHECK_CONFIG(c.train.max_steps >= 0, "--train.max_steps must be >= 0");
  UEL_CHECK_CONFIG(c.train.log_every > 0, "--train.log_every must be positive");
  UEL_CHECK_CONFIG(c.train.checkpoint_every >= 0, "--train.checkpoint_every must be >= 0");
  UEL_CHECK_CONFIG(c.train.keep >= 1, "--train.keep must be >= 1");
  UEL_CHECK_CONFIG(c.eval.every >= 0, "--eval.every must be >= 0");
  UEL_CHECK_CONFIG(
      c.eval.every == 0 || !c.data.test.empty() || c.data.val_fraction > 0,
      "--eval.every needs --data.test or --data.val_fraction");
  const Protocols protocols = parse_protocols(c.eval.protocol);
  for (const double k : c.eval.recall_k) {
    UEL_CHECK_CONFIG(
        k >= 1 && k == std::floor(k), "--eval.recall_k: {} is not a positive whole number", k);
  }
  UEL_CHECK_CONFIG(
      !protocols.recall || !c.eval.recall_k.empty(), "--eval.recall_k needs at least one K");
  UEL_CHECK_CONFIG(
      c.eval.gallery.empty() || c.eval.features == "recompute",
      "--eval.gallery replaces the training set as kNN gallery, so --eval.features=bank (features "
      "of the training set) cannot serve it; use recompute");
  UEL_CHECK_CONFIG(
      c.data.test_classes.empty() || c.data.val_fraction == 0,
      "--data.test_classes selects classes of --data.test; a validation split "
      "(--data.val_fraction) holds out the training classes. Use one or the other");
  UEL_CHECK_CONFIG(
      c.train.accumulate == 1 || methods::sums_over_samples(c.method),
      "--train.accumulate={} needs a loss that is a mean over samples (nce); the loss of "
      "--train.method={} spans the batch it sees, so micro-batches would change the objective. "
      "Use more ranks for a larger batch, or --train.accumulate=1",
      c.train.accumulate,
      c.method.name);
  UEL_CHECK_CONFIG(
      c.train.batch_size % c.train.accumulate == 0,
      "--train.batch_size {} is not divisible by --train.accumulate {}",
      c.train.batch_size,
      c.train.accumulate);
  validate(c.train.schedule);
  validate(c.train.optimizer);
}

Trainer::Trainer(RunConfig config, std::string run_dir)
    : config_(std::move(config)), run_dir_(std::move(run_dir)) {
  validate(config_);
  // LibTorch threads (train.threads) are process set-up: the commands call
  // runtime::configure_compute.
  comm::Watchdog::instance().set_timeout(config_.comm.timeout_s);
  device_ = comm::select_device(config_.train.device, config_.comm.backend == "mpi");
  comm::set_check_order(config_.comm.check_order);
  comm_ = comm::make_communicator(config_.comm.backend, device_);

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
  if (!input_.validation.empty()) {
    // Tuning: the held-out part of the training set is the query set.
    test_ = input_.dataset;
    test_positions_ = input_.validation;
  } else if (!config_.data.test.empty()) {
    auto test =
        std::make_shared<data::ImageDataset>(config_.data.test, config_.data.memory_mb << 20);
    const bool own_filter = !config_.data.test_classes.empty();
    test_positions_ = data::select_classes(
        test->labels(),
        data::parse_class_filter(
            own_filter ? config_.data.test_classes : config_.data.classes,
            test->info().num_classes,
            own_filter ? "data.test_classes" : "data.classes"),
        config_.data.test);
    test_ = test;
  }
  if (config_.eval.gallery.empty()) {
    gallery_ = input_.dataset;
    gallery_positions_ = input_.positions;
  } else {
    auto gallery =
        std::make_shared<data::ImageDataset>(config_.eval.gallery, config_.data.memory_mb << 20);
    gallery_positions_ = data::select_classes(
        gallery->labels(),
        data::parse_class_filter(config_.data.classes, gallery->info().num_classes),
        config_.eval.gallery);
    gallery_ = gallery;
  }
  config_.model.in_channels = input_.dataset->info().channels;
  torch::manual_seed(config_.train.seed);  // the same initial weights on every world size
  model_ = models::EmbeddingNet(config_.model, comm_);
  dtype_ = config_.train.precision == "float64" ? at::kDouble : at::kFloat;
  model_->to(device_, dtype_);
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
  if (!config_.train.trace.empty()) {
    tracer_ = std::make_unique<Tracer>(config_.train.trace_events);
    sync_options.tracer = tracer_.get();
  }
  std::vector<at::Tensor> buffers;
  for (const auto& b : model_->named_buffers())
    buffers.push_back(b.value());
  grad_sync_ = std::make_unique<comm::GradSync>(params, buffers, *comm_, sync_options);
}

Trainer::~Trainer() = default;

Trainer::StepEnd Trainer::train_step(
    const std::function<data::Batch()>& next_batch, double lr, bool stop_requested) {
  optimizer_->set_lr(lr);
  model_->train();
  optimizer_->zero_grad();
  const int64_t micro_batches = config_.train.accumulate;
  double loss_sum = 0;
  Tracer* const tracer = tracer_.get();
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
      loss_sum += loss.item<double>();
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
  // One all-reduce of a few doubles per step (the same collective on every rank): the loss
  // summed and divided as kAvg does, how many ranks were asked to stop, and with
  // train.noise_scale the gradients' squared norms (the average's is the same on every rank).
  at::Tensor shared =
      at::tensor({loss_sum / micro_batches, stop_requested ? 1.0 : 0.0}, at::kDouble).to(device_);
  if (config_.train.noise_scale) {
    const comm::GradSync::SquaredNorms& norms = grad_sync_->squared_norms();
    shared = at::cat({shared, norms.local.view({1}), norms.averaged.view({1})});
  }
  comm_->all_reduce(shared, comm::ReduceOp::kSum);
  shared = (shared.cpu() / comm_->size()).contiguous();
  const double* values = shared.data_ptr<double>();
  StepEnd end{values[0], values[1] > 0};
  if (config_.train.noise_scale) {
    end.rank_grad_sq = values[2];
    end.mean_grad_sq = values[3];
  }
  return end;
}

int64_t Trainer::steps_per_epoch() const {
  return input_.loader->steps_per_epoch() / config_.train.accumulate;
}

std::string Trainer::agreed_latest_checkpoint() {
  return comm_->broadcast_string(
      comm_->rank() == 0 ? latest_checkpoint(run_dir_).value_or("") : "", 0);
}

void Trainer::log_metrics(const std::string& json) {
  if (comm_->rank() != 0)
    return;
  std::ofstream out(fs::path(run_dir_) / "metrics.jsonl", std::ios::app);
  out << json << "\n";
}

void Trainer::write_trace() {
  if (!tracer_)
    return;
  const std::string mine = tracer_->json_events(comm_->rank());
  const at::Tensor bytes =
      at::from_blob(const_cast<char*>(mine.data()), {static_cast<int64_t>(mine.size())}, at::kByte)
          .to(device_);
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
  const fs::path path(config_.train.trace);
  if (path.has_parent_path())
    fs::create_directories(path.parent_path());
  std::ofstream out(path);
  // Every event ends with ",\n"; the metadata events close the list.
  out << R"({"displayTimeUnit": "ms", "traceEvents": [)"
      << "\n"
      << events << names << "\n]}\n";
  UEL_CHECK_DATA(out.good(), "could not write the trace to '{}'", config_.train.trace);
  log_info(
      "trace of {} rank(s) written to {}{}",
      comm_->size(),
      config_.train.trace,
      dropped > 0 ? fmt::format(" ({} events dropped past --train.trace_events)", dropped) : "");
}

void Trainer::truncate_metrics_after(int64_t step) {
  if (comm_->rank() != 0)
    return;
  const fs::path path = fs::path(run_dir_) / "metrics.jsonl";
  if (!fs::exists(path))
    return;
  std::ifstream in(path);
  std::string line, kept;
  static const std::regex step_field("\"step\": ([0-9]+)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, step_field) && std::stoll(m[1]) > step)
      continue;
    kept += line + "\n";
  }
  in.close();
  write_file_atomically(path.string(), kept);
}

void Trainer::save_checkpoint() {
  Tracer::Span span(tracer_.get(), "checkpoint");
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

at::Tensor Trainer::embed(
    const data::ImageDataset& dataset, const std::vector<int64_t>& positions) {
  const ShardRange shard =
      shard_range(static_cast<int64_t>(positions.size()), comm_->rank(), comm_->size());
  model_->eval();
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (int64_t begin = shard.begin; begin < shard.end; begin += config_.eval.batch_size) {
    const int64_t end = std::min(shard.end, begin + config_.eval.batch_size);
    std::vector<int64_t> indices(positions.begin() + begin, positions.begin() + end);
    parts.push_back(
        model_->forward(input_.augmenter->eval_view(dataset.read(indices).to(device_)).to(dtype_)));
  }
  if (parts.empty()) {
    return at::zeros({0, config_.model.low_dim}, at::TensorOptions().device(device_).dtype(dtype_));
  }
  return at::cat(parts);
}

Evaluation Trainer::evaluate() {
  Tracer::Span span(tracer_.get(), "evaluation");
  UEL_CHECK_CONFIG(test_ != nullptr, "evaluation needs --data.test or --data.val_fraction");
  const Protocols protocols = parse_protocols(config_.eval.protocol);
  const int rank = comm_->rank(), world = comm_->size();
  // This rank's shard_range of `positions`, the same shard embed() takes.
  const auto labels_of = [&](const data::ImageDataset& d, const std::vector<int64_t>& positions) {
    const ShardRange shard = shard_range(static_cast<int64_t>(positions.size()), rank, world);
    std::vector<int64_t> out;
    for (int64_t i = shard.begin; i < shard.end; ++i)
      out.push_back(d.labels()[positions[i]]);
    return at::tensor(out, at::kLong).to(device_);
  };
  Evaluation result;
  result.queries = static_cast<int64_t>(test_positions_.size());
  result.knn_config = config_.eval.knn;
  const at::Tensor test_features = embed(*test_, test_positions_);
  const at::Tensor test_labels = labels_of(*test_, test_positions_);
  if (protocols.knn) {
    const at::Tensor gallery = config_.eval.features == "bank"
                                   ? method_->train_features()
                                   : embed(*gallery_, gallery_positions_);
    // Queries: every rank holds all of them.
    result.knn = eval::weighted_knn(
        gallery,
        labels_of(*gallery_, gallery_positions_),
        comm_->all_gather_v(test_features),
        comm_->all_gather_v(test_labels),
        gallery_->info().num_classes,
        config_.eval.knn,
        *comm_);
  }
  if (protocols.recall) {
    const std::vector<int64_t> ks(config_.eval.recall_k.begin(), config_.eval.recall_k.end());
    result.recall = eval::recall_at_k(test_features, test_labels, ks, *comm_);
  }
  if (protocols.nmi) {
    // As many clusters as test classes, restarts as sklearn's KMeans default; the features never
    // leave their rank, only the assignments are gathered.
    const at::Tensor all_labels = comm_->all_gather_v(test_labels).cpu();
    cluster::KMeansConfig kmeans;
    kmeans.k = std::get<0>(at::_unique(all_labels)).numel();
    kmeans.n_init = 10;
    kmeans.seed = config_.train.seed;
    const cluster::KMeansResult clusters = cluster::kmeans(test_features, kmeans, *comm_);
    const at::Tensor assignments = comm_->all_gather_v(clusters.assignments).cpu();
    result.nmi = eval::nmi(all_labels, assignments);
    result.ari = eval::ari(all_labels, assignments);
  }
  return result;
}

RunEnd Trainer::run(const std::function<bool()>& stop_requested) {
  if (comm_->rank() == 0) {
    fs::create_directories(run_dir_);
    write_file_atomically((fs::path(run_dir_) / "config.ini").string(), config_.resolved_ini);
  }
  const std::string& resume = config_.train.resume;
  std::optional<std::string> from;
  if (resume == "auto") {
    // Rank 0 decides for everyone: ranks that see the file system at different moments (DONE
    // written while they look, a lagging network file system) must not resume differently.
    const std::string latest = agreed_latest_checkpoint();
    if (!latest.empty())
      from = latest;
  } else if (resume != "none") {
    from = resume;
  }
  if (from) {
    load_checkpoint(*from, /*with_state=*/true);
    truncate_metrics_after(global_step_);
    log_info("resumed from {} (epoch {}, step {})", *from, epoch_, global_step_);
  } else if (comm_->rank() == 0) {
    std::error_code ec;
    fs::remove(fs::path(run_dir_) / "metrics.jsonl", ec);
  }
  comm_->barrier();
  if (tracer_)
    tracer_->set_origin(Clock::now());  // just after a barrier: the ranks' timelines line up

  data::Loader& loader = *input_.loader;
  const int64_t steps_per_epoch = this->steps_per_epoch();
  const int64_t total_steps = steps_per_epoch * config_.train.epochs;
  const int64_t last_step =
      config_.train.max_steps > 0 ? std::min(total_steps, config_.train.max_steps) : total_steps;
  log_info(
      "training {} on {} rank(s) ({}), {} steps per epoch of {} instances, {} epochs",
      method_->name(),
      comm_->size(),
      device_.str(),
      steps_per_epoch,
      config_.train.batch_size,
      config_.train.epochs);

  auto interval_start = Clock::now();
  const auto run_start = Clock::now();
  const int64_t first_step = global_step_;
  auto progress_shown = run_start;
  const auto eta = [&] {
    const double done = static_cast<double>(global_step_ - first_step);
    return format_duration(seconds_since(run_start) / done * (last_step - global_step_));
  };
  double loss_sum = 0;
  int64_t interval_steps = 0;
  double rank_grad_sq_sum = 0, mean_grad_sq_sum = 0;  // train.noise_scale, this interval
  comm::CommStats comm_before = comm_->stats();
  comm::CommStats sync_before = grad_sync_->comm_stats();
  bool stopped = false;
  for (; epoch_ < config_.train.epochs && global_step_ < last_step; ++epoch_, step_in_epoch_ = 0) {
    start_epoch(epoch_, step_in_epoch_);
    const auto next_batch = [&] {
      std::optional<data::Batch> batch = loader.next();
      UEL_CHECK(batch.has_value(), "the loader ended epoch {} early", epoch_);
      return std::move(*batch);
    };
    while (global_step_ < last_step && step_in_epoch_ < steps_per_epoch) {
      const double epoch_position = epoch_ + static_cast<double>(step_in_epoch_) / steps_per_epoch;
      const double lr = learning_rate(
          config_.train.schedule, epoch_position, config_.train.epochs, config_.train.batch_size);
      const StepEnd step = train_step(next_batch, lr, stop_requested && stop_requested());
      const double loss = step.loss;
      ++global_step_;
      ++step_in_epoch_;
      UEL_CHECK(
          std::isfinite(loss),
          "the loss is {} at step {} (epoch {}); training stopped, the last good checkpoint stays. "
          "Lower --train.lr or {}",
          loss,
          global_step_,
          epoch_,
          method_->divergence_hint());
      loss_sum += loss;
      ++interval_steps;
      rank_grad_sq_sum += step.rank_grad_sq;
      mean_grad_sq_sum += step.mean_grad_sq;
      // The first and the last step always draw (a user sees the line start and its final state,
      // and what is drawn does not depend on the machine's speed); others at most every 0.25 s.
      if (progress_line_enabled() && (global_step_ == first_step + 1 || global_step_ == last_step ||
                                      seconds_since(progress_shown) >= 0.25)) {
        show_progress(fmt::format(
            "epoch {} step {}/{} loss {:.4f} {:.0f} img/s ETA {}",
            epoch_,
            global_step_,
            last_step,
            loss_sum / interval_steps,
            interval_steps * config_.train.batch_size / seconds_since(interval_start),
            eta()));
        progress_shown = Clock::now();
      }
      if (global_step_ % config_.train.log_every == 0 || global_step_ == last_step) {
        const double seconds = seconds_since(interval_start);
        const double img_per_s = interval_steps * config_.train.batch_size / seconds;
        const comm::CommStats now = comm_->stats(), sync_now = grad_sync_->comm_stats();
        const int64_t bytes = now.total_bytes() - comm_before.total_bytes() +
                              sync_now.total_bytes() - sync_before.total_bytes();
        const double comm_seconds = now.total_seconds() - comm_before.total_seconds() +
                                    sync_now.total_seconds() - sync_before.total_seconds();
        const double mean_loss = loss_sum / interval_steps;
        std::string method_text, method_json;
        for (const auto& [name, value] : method_->step_metrics()) {
          method_text += fmt::format(" {} {:.4f}", name, value);
          method_json += fmt::format(R"(, "{}": {:.9g})", name, value);
        }
        if (config_.train.noise_scale) {
          const auto batch = static_cast<double>(config_.train.batch_size);
          const NoiseScale noise = gradient_noise_scale(
              rank_grad_sq_sum / interval_steps,
              mean_grad_sq_sum / interval_steps,
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
          rank_grad_sq_sum = mean_grad_sq_sum = 0;
        }
        log_info(
            "epoch {} step {}/{} loss {:.4f}{} lr {:.5f} {:.0f} img/s ETA {}",
            epoch_,
            global_step_,
            last_step,
            mean_loss,
            method_text,
            lr,
            img_per_s,
            eta());
        log_metrics(fmt::format(
            R"({{"step": {}, "epoch": {}, "loss": {:.9g}, "lr": {:.9g}, "img_per_s": {:.1f}, )"
            R"("comm_bytes_per_step": {}, "comm_seconds": {:.6f}, "ranks": {}, )"
            R"("elapsed_s": {:.3f}{}}})",
            global_step_,
            epoch_,
            mean_loss,
            lr,
            img_per_s,
            bytes / interval_steps,
            comm_seconds,
            comm_->size(),
            seconds_since(run_start),
            method_json));
        loss_sum = 0;
        interval_steps = 0;
        comm_before = now;
        sync_before = sync_now;
        interval_start = Clock::now();
      }
      if (config_.train.checkpoint_every > 0 &&
          global_step_ % config_.train.checkpoint_every == 0) {
        save_checkpoint();
      }
      if (step.stop && global_step_ < last_step) {
        stopped = true;
        break;
      }
    }
    if (stopped || step_in_epoch_ < steps_per_epoch)
      break;  // stopped by a request or by max_steps inside the epoch
    if (config_.train.checkpoint_every == 0) {
      save_checkpoint();
    }
    if (config_.eval.every > 0 && (epoch_ + 1) % config_.eval.every == 0) {
      const auto eval_start = Clock::now();
      const Evaluation evaluation = evaluate();
      log_info("epoch {} {} ({:.1f} s)", epoch_, evaluation.summary(), seconds_since(eval_start));
      log_metrics(fmt::format(
          R"({{"step": {}, "epoch": {}, {}, "split": "{}", "elapsed_s": {:.3f}}})",
          global_step_,
          epoch_,
          evaluation.json_fields(),
          input_.validation.empty() ? "test" : "validation",
          seconds_since(run_start)));
      // img/s counts training time: the steps of this interval before the evaluation stay in it.
      interval_start += Clock::now() - eval_start;
    }
  }
  // A run stopped by max_steps or a request leaves a checkpoint to resume from. Saving is
  // collective, so rank 0 decides for everyone (a rank that missed DONE would otherwise save
  // alone and wait).
  const std::string last = agreed_latest_checkpoint();
  if (last != checkpoint_dir(run_dir_, global_step_)) {
    save_checkpoint();
  }
  write_trace();
  if (stopped) {
    // No rank leaves before rank 0 wrote DONE: launchers end the other ranks when one exits.
    comm_->barrier();
    log_info(
        "stopped on request after step {}/{} ({}); checkpoint {}",
        global_step_,
        last_step,
        format_duration(seconds_since(run_start)),
        checkpoint_dir(run_dir_, global_step_));
    return RunEnd::kStopped;
  }
  log_info(
      "done: {} steps in {}", global_step_ - first_step, format_duration(seconds_since(run_start)));
  return RunEnd::kCompleted;
}

void Trainer::start_epoch(int64_t epoch, int64_t first_step) {
  Tracer::Span span(tracer_.get(), "start_epoch");
  if (train_labels_.empty()) {
    for (const int64_t position : input_.positions)
      train_labels_.push_back(input_.dataset->labels()[position]);
  }
  method_->start_epoch(methods::EpochContext{
      model_,
      epoch,
      first_step,
      [this] { return embed(*input_.dataset, input_.positions); },
      train_labels_});
  if (auto sampler = method_->sampler())
    input_.loader->set_sampler(std::move(sampler));
  input_.loader->start_epoch(epoch, first_step * config_.train.accumulate);
}

StepBenchmark Trainer::benchmark(int64_t steps, int64_t warmup) {
  data::Loader& loader = *input_.loader;
  start_epoch(0, 0);
  const double lr = config_.train.schedule.lr;
  const auto next_batch = [&] { return loader.next_cycling(); };
  for (int64_t i = 0; i < warmup; ++i)
    train_step(next_batch, lr);
  comm_->barrier();
  const comm::GradSync::Timing before = grad_sync_->timing();
  const auto start = Clock::now();
  for (int64_t i = 0; i < steps; ++i)
    train_step(next_batch, lr);
  comm_->barrier();
  StepBenchmark result;
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
