#pragma once

// Assembles the training input of one rank from the data options: dataset, class filter,
// sampler, augmentation (normalisation statistics computed when not given) and loader.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "uel/data/augment.h"
#include "uel/data/dataset.h"
#include "uel/data/loader.h"
#include "uel/data/sampler.h"

namespace uel::data {

struct DataConfig {
  std::string train;  // HDF5 file
  std::string test;
  std::string classes = "all";  // class filter, e.g. 0-4
  // Class filter of the test set; "" = the same as `classes`. Unseen-category runs train on some
  // classes and test on others (e.g. classes = 0-4, test_classes = 5-9).
  std::string test_classes;
  int workers = 1;
  int prefetch = 2;
  int64_t memory_mb = 4096;  // files with at most this many MB of images are held in memory
  bool drop_last = true;     // false: pad the last batch with items from the epoch's start
  // Held out of training as the kNN query set, for tuning without touching the test set. The
  // split is fixed (independent of train.seed), so runs with different seeds share it.
  double val_fraction = 0;
};

struct TrainData {
  std::shared_ptr<const ImageDataset> dataset;
  std::vector<int64_t> positions;   // dataset indices trained on (class filter, minus validation)
  std::vector<int64_t> validation;  // dataset indices held out (data.val_fraction), ascending
  std::shared_ptr<const Augmenter> augmenter;
  std::unique_ptr<Loader> loader;
};

TrainData open_train_data(
    const DataConfig& config,
    AugmentConfig augment,
    int64_t global_batch,
    uint64_t seed,
    int rank,
    int world,
    c10::Device device,
    int num_views = 2);

}  // namespace uel::data
