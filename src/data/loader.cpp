#include "uel/data/loader.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "uel/core/error.h"

namespace uel::data {

namespace {

// The calling thread's current stream on `device`.
c10::Stream current_stream(c10::Device device) {
  return c10::impl::VirtualGuardImpl(device.type()).getStream(device);
}

}  // namespace

Loader::Loader(
    std::shared_ptr<const ImageDataset> dataset,
    std::vector<int64_t> positions,
    std::shared_ptr<const Sampler> sampler,
    std::shared_ptr<const Augmenter> augmenter,
    LoaderOptions options)
    : dataset_(std::move(dataset)),
      positions_(std::move(positions)),
      sampler_(std::move(sampler)),
      augmenter_(std::move(augmenter)),
      options_(options) {
  UEL_CHECK_CONFIG(options_.workers >= 1, "--data.workers must be >= 1, got {}", options_.workers);
  UEL_CHECK_CONFIG(
      options_.prefetch >= 1, "--data.prefetch must be >= 1, got {}", options_.prefetch);
  UEL_CHECK(options_.num_views >= 1, "a batch needs at least one view");
  for (int64_t p : positions_) {
    UEL_CHECK(p >= 0 && p < dataset_->size(), "position {} outside the dataset", p);
  }
}

Loader::~Loader() {
  stop_workers();
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (auto& t : threads_) {
    t.join();
  }
  threads_.clear();
  stopping_ = false;
}

void Loader::set_sampler(std::shared_ptr<const Sampler> sampler) {
  UEL_CHECK(
      sampler->global_batch() == sampler_->global_batch() &&
          sampler->steps_per_epoch() == sampler_->steps_per_epoch(),
      "a new sampler must keep the global batch ({}) and the steps per epoch ({}); it has {} and "
      "{}",
      sampler_->global_batch(),
      sampler_->steps_per_epoch(),
      sampler->global_batch(),
      sampler->steps_per_epoch());
  stop_workers();  // no worker may read the old order while it changes
  sampler_ = std::move(sampler);
  order_.reset();
}

void Loader::start_epoch(int64_t epoch, int64_t first_step) {
  stop_workers();
  UEL_CHECK(
      first_step >= 0 && first_step <= steps_per_epoch(),
      "cannot start epoch {} at step {} of {}",
      epoch,
      first_step,
      steps_per_epoch());
  epoch_ = epoch;
  order_ = std::make_shared<const std::vector<int64_t>>(sampler_->epoch_order(epoch));
  next_to_claim_ = first_step;
  next_to_return_ = first_step;
  ready_.clear();
  failed_.clear();
  for (int w = 0; w < options_.workers; ++w) {
    threads_.emplace_back([this] { worker_loop(); });
  }
}

void Loader::worker_loop() {
  // On a GPU a worker uses the rank's device (a new thread's default is GPU 0) and a stream of
  // its own, so that its copy and augmentation overlap the training step.
  std::optional<c10::DeviceGuard> device_guard;
  std::optional<c10::StreamGuard> stream_guard;
  if (options_.device.is_cuda()) {
    device_guard.emplace(options_.device);
    stream_guard.emplace(c10::impl::VirtualGuardImpl(options_.device.type())
                             .getStreamFromGlobalPool(options_.device));
  }
  while (true) {
    int64_t step = 0;
    int64_t epoch = 0;
    std::shared_ptr<const std::vector<int64_t>> order;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] {
        return stopping_ || next_to_claim_ >= steps_per_epoch() ||
               next_to_claim_ < next_to_return_ + options_.prefetch;
      });
      if (stopping_ || next_to_claim_ >= steps_per_epoch()) {
        return;
      }
      step = next_to_claim_++;
      epoch = epoch_;
      order = order_;
    }
    try {
      Batch batch = make_batch(epoch, step, *order);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(step, std::move(batch));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failed_.emplace(step, std::current_exception());
    }
    changed_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  UEL_CHECK(order_ != nullptr, "Loader::next before start_epoch");
  std::unique_lock<std::mutex> lock(mutex_);
  if (next_to_return_ >= steps_per_epoch()) {
    return std::nullopt;
  }
  const int64_t step = next_to_return_;
  changed_.wait(lock, [&] { return ready_.count(step) > 0 || failed_.count(step) > 0; });
  if (auto it = failed_.find(step); it != failed_.end()) {
    std::rethrow_exception(it->second);
  }
  Batch batch = std::move(ready_.at(step));
  ready_.erase(step);
  ++next_to_return_;
  lock.unlock();
  changed_.notify_all();
  if (batch.ready) {
    // The consumer's stream waits for the worker's; the views are marked as used on it, so the
    // caching allocator does not give their memory back to the worker's stream too early.
    const c10::Stream stream = current_stream(options_.device);
    batch.ready->block(stream);
    for (const at::Tensor& view : batch.views)
      view.record_stream(stream);
    for (const at::Tensor& labels : batch.rotation_labels)
      labels.record_stream(stream);
  }
  return batch;
}

Batch Loader::next_cycling() {
  std::optional<Batch> batch = next();
  if (!batch) {
    start_epoch(epoch_ + 1);
    batch = next();
  }
  return std::move(*batch);
}

Batch Loader::make_batch(int64_t epoch, int64_t step, const std::vector<int64_t>& order) const {
  const std::vector<int64_t> local = sampler_->local_batch(order, step);
  std::vector<int64_t> indices(local.size());
  std::vector<int64_t> labels(local.size());
  for (size_t i = 0; i < local.size(); ++i) {
    UEL_CHECK(
        local[i] >= 0 && local[i] < static_cast<int64_t>(positions_.size()),
        "sampler position {} outside the {} selectable items",
        local[i],
        positions_.size());
    indices[i] = positions_[local[i]];
    labels[i] = dataset_->labels()[indices[i]];
  }
  Batch batch;
  batch.epoch = epoch;
  batch.step = step;
  batch.indices = at::tensor(indices, at::kLong);
  batch.items = at::tensor(local, at::kLong);
  batch.labels = at::tensor(labels, at::kLong);
  at::Tensor images = dataset_->read(indices);
  // From pinned memory the copy to a GPU runs on the worker's stream without blocking it.
  images = options_.device.is_cuda()
               ? images.pin_memory().to(options_.device, /*non_blocking=*/true)
               : images.to(options_.device);
  for (int v = 0; v < options_.num_views; ++v) {
    // Keyed by dataset index: the same instance gets the same views whatever the batch split.
    AugmentedViews views = augmenter_->train_view(images, indices, epoch, v);
    batch.views.push_back(std::move(views.images));
    if (augmenter_->config().rotation) {
      batch.rotation_labels.push_back(std::move(views.rotation_labels));
    }
  }
  if (options_.device.is_cuda()) {
    batch.ready = std::make_shared<c10::Event>(options_.device.type());
    batch.ready->record(current_stream(options_.device));
  }
  return batch;
}

}  // namespace uel::data
