#pragma once

// Batch normalisation whose statistics span the global batch: in training, per-channel sums are
// all-reduced in forward and the gradient sums in backward, so N ranks normalise exactly as one
// process with the whole batch (DESIGN.md §2, world-size invariance). Eval mode uses the
// running statistics like torch::nn::BatchNorm. Models build it in place of BatchNorm when
// model.sync_bn is set (a module swap cannot reach inside torch::nn::Sequential).

#include <memory>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

class SyncBatchNormImpl : public torch::nn::Module {
 public:
  SyncBatchNormImpl(
      int64_t num_features,
      std::shared_ptr<Communicator> comm,
      double eps = 1e-5,
      double momentum = 0.1);

  // input: [N, C] or [N, C, ...] with C = num_features.
  at::Tensor forward(const at::Tensor& input);

  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  std::shared_ptr<Communicator> comm_;
  int64_t num_features_;
  double eps_;
  double momentum_;
};
TORCH_MODULE(SyncBatchNorm);

}  // namespace uel::comm
