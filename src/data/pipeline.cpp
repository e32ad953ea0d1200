#include "uel/data/pipeline.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/core/rng.h"

namespace uel::data {

TrainData open_train_data(
    const DataConfig& config,
    AugmentConfig augment,
    int64_t global_batch,
    uint64_t seed,
    int rank,
    int world,
    c10::Device device,
    int num_views) {
  UEL_CHECK_CONFIG(
      !config.train.empty(), "--data.train is not set; point it at a prepared HDF5 file");
  Sampler::check_batch(global_batch, world);  // before any reading
  TrainData out;
  auto dataset = std::make_shared<ImageDataset>(config.train, config.memory_mb << 20);
  const DatasetInfo& info = dataset->info();
  out.positions = select_classes(
      dataset->labels(), parse_class_filter(config.classes, info.num_classes), config.train);
  if (config.val_fraction > 0) {
    std::vector<int64_t> shuffled = out.positions;
    Rng rng(stream_key(0, RngPurpose::kSplit, 0, 0));
    shuffle(shuffled, rng);
    const auto held =
        static_cast<size_t>(std::max<double>(1, std::round(config.val_fraction * shuffled.size())));
    // The first moment the split sizes are known: before statistics, the model or any step.
    UEL_CHECK_CONFIG(
        held < shuffled.size(),
        "--data.val_fraction {} holds out all {} training images of '{}' and leaves nothing to "
        "train on; lower it",
        config.val_fraction,
        shuffled.size(),
        config.train);
    out.validation.assign(shuffled.begin(), shuffled.begin() + held);
    out.positions.assign(shuffled.begin() + held, shuffled.end());
    std::sort(out.validation.begin(), out.validation.end());
    std::sort(out.positions.begin(), out.positions.end());
  }
  if (augment.mean.empty() || augment.std.empty()) {
    auto [mean, std] = channel_stats(*dataset, out.positions);
    if (augment.mean.empty())
      augment.mean = mean;
    if (augment.std.empty())
      augment.std = std;
    log_info(
        "normalising with mean {:.4f} and std {:.4f} measured on {}",
        fmt::join(augment.mean, ","),
        fmt::join(augment.std, ","),
        config.train);
  }
  augment.validate(info.channels);
  auto sampler = std::make_shared<DistributedSampler>(
      static_cast<int64_t>(out.positions.size()),
      global_batch,
      rank,
      world,
      seed,
      /*shuffle=*/true,
      config.drop_last ? TailPolicy::kDrop : TailPolicy::kPad);
  out.augmenter = std::make_shared<Augmenter>(std::move(augment), seed);
  out.dataset = dataset;
  LoaderOptions options;
  options.workers = config.workers;
  options.prefetch = config.prefetch;
  options.device = device;
  options.num_views = num_views;
  out.loader =
      std::make_unique<Loader>(out.dataset, out.positions, sampler, out.augmenter, options);
  return out;
}

}  // namespace uel::data
