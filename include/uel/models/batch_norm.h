#pragma once

// Batch normalisation of [N, C] or [N, C, ...] inputs, over this rank's batch (LibTorch's batch
// norm, cuDNN on GPUs) or, given a communicator, over the global batch: per-channel sums are
// all-reduced in forward and the gradient sums in backward, so N ranks normalise exactly as one
// process with the whole batch (model.sync_bn; DESIGN.md §2, world-size invariance). The
// synchronised form runs ATen's fused statistics and reduction kernels and one addcmul each way,
// so it costs a step no more than the local one. Eval mode uses the running statistics, as
// torch::nn::BatchNorm does. Parameter and buffer names are BatchNorm's: checkpoints carry over.

#include <memory>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "uel/comm/communicator.h"

namespace uel::models {

class BatchNormImpl : public torch::nn::Module {
 public:
  // comm == nullptr: each rank's own statistics.
  BatchNormImpl(
      int64_t num_features,
      std::shared_ptr<comm::Communicator> comm = nullptr,
      double eps = 1e-5,
      double momentum = 0.1);

  // input: [N, C] or [N, C, ...] with C = num_features.
  at::Tensor forward(const at::Tensor& input);

  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  std::shared_ptr<comm::Communicator> comm_;
  int64_t num_features_;
  double eps_;
  double momentum_;
};
TORCH_MODULE(BatchNorm);

}  // namespace uel::models
