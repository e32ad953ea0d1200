#pragma once

// The optimizers of train.optimizer over parameter groups with their own learning-rate
// multiplier and weight decay (the embedding net, a method's heads).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

namespace uel::train {

struct OptimizerConfig {
  std::string name = "sgd";  // sgd | lars | adam | adamw
  double momentum = 0.9;     // sgd, lars
  // LARS (You et al. 2017): each weight's step is scaled by the trust ratio
  // eta ||w|| / (||g|| + weight_decay ||w||); 1-D parameters (BatchNorm, biases) are neither
  // adapted nor decayed, as SimCLR does.
  double lars_eta = 0.001;
  double weight_decay = 5e-4;
  double beta1 = 0.9;  // adam, adamw
  double beta2 = 0.999;
};

struct OptimizerGroup {
  std::vector<at::Tensor> params;
  double lr_scale = 1;
  double weight_decay = 0;
  // A group may have its own optimizer ("sgd" with `momentum`); "" follows OptimizerConfig.
  std::string optimizer;
  double momentum = 0.9;
  // Its own base learning rate instead of lr_scale x the base: the schedule still shapes it
  // (warm-up, decays), as the margin seed's second trainer decays with the first.
  std::optional<double> own_lr;
};

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, double lr, std::vector<OptimizerGroup> groups);
  // lr: the scheduled learning rate of this step; every group gets lr x its scale.
  void set_lr(double lr);
  void zero_grad();
  // LARS groups first turn each gradient g of a weight w into trust x (g + wd w), then the
  // momentum SGD step runs on it (the way NVIDIA's LARC wraps SGD): with a constant lr this is
  // the paper's v = m v + lr trust (g + wd w), w -= v.
  void step();
  // One file for every optimizer's state (a single optimizer is saved as torch::save does).
  void save(const std::string& path) const;
  // Onto the parameters' device, wherever the state was saved.
  void load(const std::string& path);

 private:
  struct Slot {
    size_t optimizer;  // index into optimizers_
    size_t group;      // its param group there
    double lr_scale;   // of the scheduled lr (own_lr / base lr for a group with its own)
    bool lars = false;
    double weight_decay = 0;  // LARS applies it itself (its torch SGD has none)
  };
  void adapt_lars_gradients();
  double lars_eta_ = 0;
  c10::Device device_ = c10::kCPU;  // of the parameters
  std::vector<Slot> slots_;
  std::vector<std::unique_ptr<torch::optim::Optimizer>> optimizers_;
};

// ConfigError naming the valid values.
void validate(const OptimizerConfig& config);

}  // namespace uel::train
