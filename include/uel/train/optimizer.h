#pragma once

// The optimizers of train.optimizer over parameter groups with their own learning-rate
// multiplier and weight decay (the embedding net, a method's heads).

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

namespace uel::train {

struct OptimizerConfig {
  std::string name = "sgd";  // sgd | adam | adamw
  double momentum = 0.9;     // sgd
  double weight_decay = 5e-4;
  double beta1 = 0.9;  // adam, adamw
  double beta2 = 0.999;
};

struct OptimizerGroup {
  std::vector<at::Tensor> params;
  double lr_scale = 1;
  double weight_decay = 0;
};

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, double lr, std::vector<OptimizerGroup> groups);
  // Sets every group's learning rate to lr x its scale (the schedule, every step).
  void set_lr(double lr);
  void zero_grad();
  void step();
  torch::optim::Optimizer& torch_optimizer() {
    return *optimizer_;
  }

 private:
  std::vector<double> scales_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

// ConfigError naming the valid values.
void validate(const OptimizerConfig& config);

}  // namespace uel::train
