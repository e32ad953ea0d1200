#pragma once

// The training input pipeline: sampler -> HDF5 read -> augmented views, prepared by background
// threads a few steps ahead of the consumer. On a GPU the images go from pinned host memory to
// the device and through the augmentation on each worker's own stream, ordered before the
// consumer's work by an event (no host synchronisation).

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/Event.h>

#include "uel/data/augment.h"
#include "uel/data/dataset.h"
#include "uel/data/sampler.h"

namespace uel::data {

struct Batch {
  int64_t epoch = 0;
  int64_t step = 0;                         // within the epoch
  std::vector<at::Tensor> views;            // num_views x float [b, C, S, S] on the device
  at::Tensor indices;                       // int64 [b], dataset indices
  at::Tensor items;                         // int64 [b], sampler positions (memory-bank rows)
  at::Tensor labels;                        // int64 [b]
  std::vector<at::Tensor> rotation_labels;  // num_views x int64 [b] when rotation is on
  // On a GPU: recorded on the stream that made the views; Loader::next makes the caller's
  // stream wait for it.
  std::shared_ptr<c10::Event> ready;
};

struct LoaderOptions {
  int workers = 1;   // background threads
  int prefetch = 2;  // batches prepared ahead of the consumer
  int num_views = 2;
  c10::Device device = c10::Device(c10::kCPU);
};

class Loader {
 public:
  // positions: the sampler's item p is dataset index positions[p] (e.g. a class filter).
  Loader(
      std::shared_ptr<const ImageDataset> dataset,
      std::vector<int64_t> positions,
      std::shared_ptr<const Sampler> sampler,
      std::shared_ptr<const Augmenter> augmenter,
      LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t steps_per_epoch() const {
    return sampler_->steps_per_epoch();
  }
  // Replaces the sampler from the next start_epoch on (pseudo-labels that change between
  // epochs); it must keep the global batch and the steps per epoch, which fix the schedule.
  void set_sampler(std::shared_ptr<const Sampler> sampler);
  // Begins (or restarts) an epoch at `first_step` (non-zero when resuming mid-epoch).
  void start_epoch(int64_t epoch, int64_t first_step = 0);
  // The next batch of the epoch, or nullopt at its end. Rethrows a worker's exception.
  std::optional<Batch> next();

  // The next batch, starting the following epoch when one ends (benchmarks).
  Batch next_cycling();

  // Builds one batch synchronously on the current stream (what the workers run).
  Batch make_batch(int64_t epoch, int64_t step, const std::vector<int64_t>& order) const;

 private:
  void stop_workers();
  void worker_loop();

  std::shared_ptr<const ImageDataset> dataset_;
  std::vector<int64_t> positions_;
  std::shared_ptr<const Sampler> sampler_;
  std::shared_ptr<const Augmenter> augmenter_;
  LoaderOptions options_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
  int64_t epoch_ = -1;
  std::shared_ptr<const std::vector<int64_t>> order_;
  int64_t next_to_claim_ = 0;   // step a worker takes next
  int64_t next_to_return_ = 0;  // step next() returns next
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
};

}  // namespace uel::data
