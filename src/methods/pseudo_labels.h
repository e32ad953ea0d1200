#pragma once

// k-means pseudo-labels of the training set, shared by the methods that train on them (udml,
// margin with labels=kmeans): re-clustered every few epochs, warm-started from the last
// centroids, the same on every rank and world size, and checkpointed (private to src/methods).

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "uel/methods/method.h"

namespace uel::methods {

// ConfigError naming the --pseudo.* option.
void validate(const PseudoLabelConfig& config);

class PseudoLabels {
 public:
  PseudoLabels(
      const PseudoLabelConfig& config,
      const MethodSetup& setup,
      int64_t items_per_class,
      const std::string& option_prefix);

  // Re-clusters at epochs that are multiples of recluster_every, unless a checkpoint already
  // holds this epoch's labels (a run resumed inside it, or between re-clusterings).
  void start_epoch(const EpochContext& context);
  // Pseudo-labels of sampler positions `items` ([b] int64), on the training device.
  at::Tensor of(const at::Tensor& items) const;
  // m x k batches over the pseudo-labels.
  std::shared_ptr<const data::Sampler> sampler() const {
    return sampler_;
  }
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive, const std::string& path);

 private:
  void recluster(const EpochContext& context);
  void set_labels(const at::Tensor& labels);

  PseudoLabelConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  uint64_t seed_;
  int64_t global_batch_;
  int64_t items_per_class_;
  int64_t train_items_;
  int64_t feature_dim_;  // of the clustered layer: the centroids' width
  at::TensorOptions options_;
  at::Tensor labels_;  // int64 [N] on the training device
  at::Tensor centroids_;
  std::shared_ptr<const data::Sampler> sampler_;
};

}  // namespace uel::methods
