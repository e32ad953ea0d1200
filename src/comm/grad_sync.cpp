#include "uel/comm/grad_sync.h"

#include <map>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/variable.h>

#include "uel/core/clock.h"
#include "uel/core/error.h"

namespace uel::comm {
using core::Clock;
using core::seconds_since;

GradSync::GradSync(
    std::vector<std::pair<std::string, at::Tensor>> named_parameters,
    std::vector<at::Tensor> buffers,
    Communicator& comm,
    GradSyncOptions options)
    : buffers_(std::move(buffers)), model_comm_(comm), options_(options) {
  UEL_CHECK_CONFIG(
      options.bucket_mb > 0 && options.first_bucket_mb > 0,
      "--comm.bucket_mb and --comm.first_bucket_mb must be positive");
  // Everyone starts from rank 0's weights and buffers.
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : named_parameters) {
      at::Tensor data = p.detach();
      comm.broadcast(data, 0);
    }
    for (auto& b : buffers_) {
      at::Tensor data = b.detach();
      comm.broadcast(data, 0);
    }
  }

  for (auto it = named_parameters.rbegin(); it != named_parameters.rend(); ++it) {
    if (it->second.requires_grad()) {
      Slot slot;
      slot.name = it->first;
      slot.param = it->second;
      slots_.push_back(std::move(slot));
    }
  }
  UEL_CHECK(!slots_.empty(), "GradSync needs at least one parameter that requires a gradient");
  // Reverse registration order approximates the order backward produces gradients in.
  int64_t bucket_bytes = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const at::Tensor& p = slots_[i].param;
    // The first bucket is small so its all-reduce starts while backward is still young.
    const double cap =
        (buckets_.size() == 1 ? options.first_bucket_mb : options.bucket_mb) * (1 << 20);
    const bool fits =
        !buckets_.empty() && bucket_bytes + p.nbytes() <= cap &&
        slots_[buckets_.back().params.front()].param.options().type_equal(p.options()) &&
        slots_[buckets_.back().params.front()].param.device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      bucket_bytes = 0;
    }
    buckets_.back().params.push_back(i);
    bucket_bytes += p.nbytes();
    slots_[i].bucket = buckets_.size() - 1;
  }
  for (auto& bucket : buckets_) {
    int64_t total = 0;
    for (size_t i : bucket.params)
      total += slots_[i].param.numel();
    const at::Tensor& first = slots_[bucket.params.front()].param;
    bucket.flat = at::zeros({total}, first.options().requires_grad(false));
    int64_t offset = 0;
    for (size_t i : bucket.params) {
      Slot& s = slots_[i];
      s.view = bucket.flat.narrow(0, offset, s.param.numel()).view(s.param.sizes());
      offset += s.param.numel();
    }
  }
  reset_step();
  const bool launch_inline = options.launch == BucketLaunch::kInline ||
                             (options.launch == BucketLaunch::kAuto && comm.asynchronous());
  if (!launch_inline) {
    comm_ = comm.split();
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].hook =
        slots_[i].param.register_hook([this, i](const at::Tensor& grad) { on_gradient(i, grad); });
  }
  if (comm_) {
    worker_ = std::thread([this] { worker_loop(); });
  }
}

GradSync::~GradSync() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable())
    worker_.join();
  for (auto& s : slots_) {
    s.param.remove_hook(s.hook);
  }
}

void GradSync::reset_step() {
  for (auto& s : slots_)
    s.arrived = false;
  for (auto& b : buckets_) {
    b.pending = static_cast<int64_t>(b.params.size());
    b.ready = false;
  }
  next_launch_ = 0;
  launched_.clear();
}

void GradSync::on_gradient(size_t index, const at::Tensor& grad) {
  if (no_sync_) {
    return;  // autograd accumulates into .grad as usual
  }
  Slot& s = slots_[index];
  UEL_CHECK(
      !s.arrived,
      "parameter '{}' received a second gradient before GradSync::finish(); call finish() after "
      "every synchronised backward, or accumulate under no_sync()",
      s.name);
  UEL_CHECK(
      !grad.is_sparse(), "parameter '{}' has a sparse gradient; GradSync needs dense ones", s.name);
  // Gradients accumulated under no_sync() live in .grad; add them so the average covers them.
  const at::Tensor& existing = s.param.grad();
  if (existing.defined()) {
    s.view.copy_(existing + grad);
  } else {
    s.view.copy_(grad);
  }
  mark_arrived(index);
}

void GradSync::mark_arrived(size_t index) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = slots_[index];
  s.arrived = true;
  Bucket& b = buckets_[s.bucket];
  if (--b.pending == 0) {
    b.ready = true;
    if (launches_inline()) {
      launch_ready();
    } else {
      changed_.notify_all();
    }
  }
}

void GradSync::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].ready) {
    Bucket& b = buckets_[next_launch_++];
    measure_local_norm(b);
    const auto start = Clock::now();
    launched_.push_back(model_comm_.all_reduce_async(b.flat, ReduceOp::kAvg));
    trace_all_reduce(next_launch_ - 1, start);
    if (measures_timing()) {
      // Blocking inline: backward waits for the whole all-reduce.
      const double seconds = seconds_since(start);
      timing_.all_reduce_seconds += seconds;
      timing_.exposed_seconds += seconds;
    }
  }
}

void GradSync::measure_local_norm(Bucket& bucket) const {
  if (options_.measure_norms)
    bucket.local_squared_norm = bucket.flat.square().sum(at::kDouble);
}

void GradSync::trace_all_reduce(size_t bucket, Clock::time_point start) const {
  if (options_.tracer == nullptr)
    return;
  // Both launch paths run off the trainer's thread's phase nesting (autograd's hooks, the
  // worker), so the events go on a thread of their own.
  options_.tracer->record(
      model_comm_.asynchronous() && launches_inline() ? "all_reduce_enqueue" : "all_reduce",
      Tracer::kGradSyncThread,
      start,
      Clock::now(),
      fmt::format(
          R"("bucket": {}, "bytes": {})",
          bucket,
          buckets_[bucket].flat.numel() * buckets_[bucket].flat.element_size()));
}

void GradSync::worker_loop() {
  while (true) {
    Bucket* bucket = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] {
        return stopping_ || (next_launch_ < buckets_.size() && buckets_[next_launch_].ready);
      });
      if (stopping_) {
        return;
      }
      bucket = &buckets_[next_launch_];
    }
    const auto start = Clock::now();
    try {
      measure_local_norm(*bucket);
      comm_->all_reduce(bucket->flat, ReduceOp::kAvg);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failure_ = std::current_exception();
      changed_.notify_all();
      return;
    }
    const double seconds = seconds_since(start);
    std::lock_guard<std::mutex> lock(mutex_);
    trace_all_reduce(next_launch_, start);
    timing_.all_reduce_seconds += seconds;
    ++next_launch_;
    changed_.notify_all();
  }
}

void GradSync::finish() {
  UEL_CHECK(
      !no_sync_, "GradSync::finish() inside no_sync(); finish after the synchronised backward");
  // Slots run in reverse registration order; report names in registration order.
  std::vector<std::string> missing;
  std::vector<size_t> missing_index;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = slots_.size(); i-- > 0;) {
      if (!slots_[i].arrived) {
        missing.push_back(slots_[i].name);
        missing_index.push_back(i);
      }
    }
  }
  UEL_CHECK(
      missing.empty() || options_.allow_unused,
      "parameters [{}] received no gradient in this step; every rank must use every parameter "
      "(or allow unused parameters)",
      fmt::join(missing, ", "));
  for (size_t i : missing_index) {
    // The bucket still goes through the all-reduce: another rank may have used the parameter.
    const at::Tensor& existing = slots_[i].param.grad();
    if (existing.defined()) {
      slots_[i].view.copy_(existing);
    } else {
      slots_[i].view.zero_();
    }
    mark_arrived(i);
  }
  if (launches_inline()) {
    Tracer::Span wait(options_.tracer, "grad_sync_wait");
    std::lock_guard<std::mutex> lock(mutex_);
    UEL_CHECK(next_launch_ == buckets_.size(), "GradSync: a bucket was never launched");
    for (auto& work : launched_)
      work->wait();
  } else {
    Tracer::Span wait(options_.tracer, "grad_sync_wait");
    const auto start = Clock::now();
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return failure_ || next_launch_ == buckets_.size(); });
    if (failure_) {
      std::rethrow_exception(failure_);
    }
    timing_.exposed_seconds += seconds_since(start);
  }
  // As DDP does: a parameter no rank used keeps no gradient, so optimisers skip it (a zero
  // gradient would still apply weight decay). The worker is idle now, so every communicator is
  // free; this runs on the model's, in the same place of every rank's order.
  std::vector<bool> used(slots_.size(), true);
  if (options_.allow_unused) {
    std::vector<int> flags(slots_.size(), 1);
    for (size_t i : missing_index)
      flags[i] = 0;
    at::Tensor all = at::tensor(flags, at::kInt).to(model_comm_.device());
    model_comm_.all_reduce(all, ReduceOp::kMax);
    all = all.cpu();
    for (size_t i = 0; i < slots_.size(); ++i)
      used[i] = all.data_ptr<int>()[i] != 0;
  }
  if (options_.broadcast_buffers) {
    broadcast_buffers();
  }
  if (options_.measure_norms) {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> local, averaged;
    for (const auto& b : buckets_) {
      local.push_back(b.local_squared_norm);
      averaged.push_back(b.flat.square().sum(at::kDouble));
    }
    squared_norms_ = {at::stack(local).sum(), at::stack(averaged).sum()};
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reset_step();
    ++timing_.steps;
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (!used[i]) {
      continue;
    }
    if (s.param.grad().defined()) {
      s.param.mutable_grad().copy_(s.view);
    } else {
      s.param.mutable_grad() = s.view.clone();
    }
  }
}

void GradSync::broadcast_buffers() {
  // One broadcast per dtype: the buffers flattened, sent, and copied back.
  at::NoGradGuard no_grad;
  std::map<at::ScalarType, std::vector<at::Tensor>> by_type;
  for (const auto& b : buffers_) {
    if (b.numel() > 0)
      by_type[b.scalar_type()].push_back(b);
  }
  for (auto& [type, tensors] : by_type) {
    std::vector<at::Tensor> flat;
    for (const auto& t : tensors)
      flat.push_back(t.detach().reshape(-1));
    at::Tensor packed = at::cat(flat);
    model_comm_.broadcast(packed, 0);
    int64_t offset = 0;
    for (auto& t : tensors) {
      t.detach().copy_(packed.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

GradSync::Timing GradSync::timing() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return timing_;
}

const GradSync::SquaredNorms& GradSync::squared_norms() const {
  UEL_CHECK(
      squared_norms_.local.defined(),
      "GradSync::squared_norms() needs measure_norms and a finished step");
  return squared_norms_;
}

int64_t GradSync::gradient_bytes() const {
  int64_t bytes = 0;
  for (const auto& b : buckets_)
    bytes += b.flat.nbytes();
  return bytes;
}

std::vector<std::vector<size_t>> GradSync::bucket_layout() const {
  std::vector<std::vector<size_t>> layout;
  for (const auto& b : buckets_)
    layout.push_back(b.params);
  return layout;
}

}  // namespace uel::comm
