#pragma once

// The rotation-prediction task (Gidaris et al. 2018), UDML-SS's self-supervised regulariser and
// optionally ISIF's: a few images of the global batch in four rotations, a small head on the
// backbone's features predicts which, cross-entropy weighted into the method's loss (private to
// src/methods).

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "uel/methods/method.h"

namespace uel::methods {

// ConfigError naming the --PREFIX.rotation_* option.
void validate(const RotationConfig& config, const std::string& option_prefix);

class RotationTask {
 public:
  // No head when config.weight is 0: then the methods skip loss(), and the rest does nothing.
  RotationTask(
      const RotationConfig& config, const MethodSetup& setup, const std::string& option_prefix);

  bool enabled() const {
    return !head_.is_empty();
  }
  // The head's parameters with their learning-rate scale; empty when disabled.
  std::vector<ParamGroup> parameter_groups() const;
  // weight x the mean cross-entropy over the global rotation batch (averaged over ranks, as every
  // loss here), of the rotated copies of every (B / items)-th image of the global batch in
  // `images`, this rank's [b, C, H, W] part of it. Counts the copies predicted right.
  at::Tensor loss(const at::Tensor& images, models::EmbeddingNet& model);
  // Collective: appends rotation_acc, the accuracy since the last call over all ranks.
  void append_metrics(std::vector<std::pair<std::string, double>>& out);
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  RotationConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  int64_t global_batch_;
  torch::nn::Sequential head_{nullptr};
  at::Tensor correct_;  // on the training device, so that counting does not synchronise
  int64_t seen_ = 0;
};

}  // namespace uel::methods
