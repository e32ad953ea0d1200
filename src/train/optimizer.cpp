#include "uel/train/optimizer.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "uel/core/error.h"

namespace uel::train {

void validate(const OptimizerConfig& c) {
  UEL_CHECK_CONFIG(
      c.name == "sgd" || c.name == "adam" || c.name == "adamw",
      "--train.optimizer='{}' is not an optimizer; use sgd, adam or adamw",
      c.name);
  UEL_CHECK_CONFIG(
      c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1,
      "--train.adam_beta1 and --train.adam_beta2 must be in [0, 1), got {} and {}",
      c.beta1,
      c.beta2);
}

Optimizer::Optimizer(const OptimizerConfig& config, double lr, std::vector<OptimizerGroup> groups) {
  validate(config);
  // Each group's options are the optimizer's options with its own lr and weight decay.
  const auto options_for =
      [&](const OptimizerGroup& g) -> std::unique_ptr<torch::optim::OptimizerOptions> {
    const double group_lr = lr * g.lr_scale;
    if (config.name == "sgd") {
      return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(group_lr)
                                                            .momentum(config.momentum)
                                                            .weight_decay(g.weight_decay));
    }
    if (config.name == "adam") {
      return std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(group_lr)
                                                             .betas({config.beta1, config.beta2})
                                                             .weight_decay(g.weight_decay));
    }
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(group_lr)
                                                            .betas({config.beta1, config.beta2})
                                                            .weight_decay(g.weight_decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> torch_groups;
  for (const OptimizerGroup& g : groups) {
    scales_.push_back(g.lr_scale);
    torch_groups.emplace_back(g.params, options_for(g));
  }
  const OptimizerGroup defaults{{}, 1, config.weight_decay};
  if (config.name == "sgd") {
    optimizer_ = std::make_unique<torch::optim::SGD>(
        torch_groups, static_cast<torch::optim::SGDOptions&>(*options_for(defaults)));
  } else if (config.name == "adam") {
    optimizer_ = std::make_unique<torch::optim::Adam>(
        torch_groups, static_cast<torch::optim::AdamOptions&>(*options_for(defaults)));
  } else {
    optimizer_ = std::make_unique<torch::optim::AdamW>(
        torch_groups, static_cast<torch::optim::AdamWOptions&>(*options_for(defaults)));
  }
}

void Optimizer::set_lr(double lr) {
  auto& groups = optimizer_->param_groups();
  for (size_t i = 0; i < groups.size(); ++i)
    groups[i].options().set_lr(lr * scales_[i]);
}

void Optimizer::zero_grad() {
  optimizer_->zero_grad();
}

void Optimizer::step() {
  optimizer_->step();
}

}  // namespace uel::train
