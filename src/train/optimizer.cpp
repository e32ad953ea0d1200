#include "uel/train/optimizer.h"

#include <algorithm>
#include <map>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include "uel/core/error.h"
#include "uel/models/embedding_net.h"

namespace uel::train {

void validate(const OptimizerConfig& c) {
  UEL_CHECK_CONFIG(
      c.name == "sgd" || c.name == "lars" || c.name == "adam" || c.name == "adamw",
      "--train.optimizer='{}' is not an optimizer; use sgd, lars, adam or adamw",
      c.name);
  UEL_CHECK_CONFIG(
      c.lars_eta > 0 && c.lars_eta <= 1,
      "--train.lars_eta must be in (0, 1], got {} (You et al. use 0.001)",
      c.lars_eta);
  UEL_CHECK_CONFIG(
      c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1,
      "--train.adam_beta1 and --train.adam_beta2 must be in [0, 1), got {} and {}",
      c.beta1,
      c.beta2);
}

namespace {

std::unique_ptr<torch::optim::OptimizerOptions> options_for(
    const std::string& name, const OptimizerConfig& c, double lr, double wd, double momentum) {
  if (name == "lars")  // weight decay is part of the trust-ratio step (Optimizer::step)
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(lr).momentum(momentum));
  if (name == "sgd") {
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(wd));
  }
  if (name == "adam") {
    return std::make_unique<torch::optim::AdamOptions>(
        torch::optim::AdamOptions(lr).betas({c.beta1, c.beta2}).weight_decay(wd));
  }
  return std::make_unique<torch::optim::AdamWOptions>(
      torch::optim::AdamWOptions(lr).betas({c.beta1, c.beta2}).weight_decay(wd));
}

std::unique_ptr<torch::optim::Optimizer> make(
    const std::string& name,
    std::vector<torch::optim::OptimizerParamGroup> groups,
    const torch::optim::OptimizerOptions& defaults) {
  if (name == "sgd" || name == "lars") {
    return std::make_unique<torch::optim::SGD>(
        std::move(groups), static_cast<const torch::optim::SGDOptions&>(defaults));
  }
  if (name == "adam") {
    return std::make_unique<torch::optim::Adam>(
        std::move(groups), static_cast<const torch::optim::AdamOptions&>(defaults));
  }
  return std::make_unique<torch::optim::AdamW>(
      std::move(groups), static_cast<const torch::optim::AdamWOptions&>(defaults));
}

}  // namespace

Optimizer::Optimizer(const OptimizerConfig& config, double lr, std::vector<OptimizerGroup> groups)
    : lars_eta_(config.lars_eta) {
  validate(config);
  for (const OptimizerGroup& g : groups) {
    if (!g.params.empty()) {
      device_ = g.params.front().device();
      break;
    }
  }
  // One torch optimizer per kind, in the order kinds first appear; each group keeps its slot.
  std::vector<std::string> kinds;
  std::map<std::string, std::vector<torch::optim::OptimizerParamGroup>> by_kind;
  for (const OptimizerGroup& g : groups) {
    const std::string kind = g.optimizer.empty() ? config.name : g.optimizer;
    UEL_CHECK(
        kind == "sgd" || kind == "lars" || kind == "adam" || kind == "adamw",
        "unknown optimizer '{}'",
        kind);
    if (!by_kind.count(kind))
      kinds.push_back(kind);
    auto& list = by_kind[kind];
    const size_t index =
        static_cast<size_t>(std::find(kinds.begin(), kinds.end(), kind) - kinds.begin());
    const double scale = g.own_lr ? *g.own_lr / lr : g.lr_scale;
    slots_.push_back({index, list.size(), scale, kind == "lars", g.weight_decay});
    const double momentum = g.optimizer.empty() ? config.momentum : g.momentum;
    list.emplace_back(g.params, options_for(kind, config, lr * scale, g.weight_decay, momentum));
  }
  for (const std::string& kind : kinds) {
    const auto defaults = options_for(kind, config, lr, config.weight_decay, config.momentum);
    optimizers_.push_back(make(kind, std::move(by_kind[kind]), *defaults));
  }
}

void Optimizer::set_lr(double lr) {
  for (const Slot& slot : slots_)
    optimizers_[slot.optimizer]->param_groups()[slot.group].options().set_lr(lr * slot.lr_scale);
}

void Optimizer::zero_grad() {
  for (auto& optimizer : optimizers_)
    optimizer->zero_grad();
}

void Optimizer::adapt_lars_gradients() {
  torch::NoGradGuard no_grad;
  for (const Slot& slot : slots_) {
    if (!slot.lars)
      continue;
    for (at::Tensor& w : optimizers_[slot.optimizer]->param_groups()[slot.group].params()) {
      at::Tensor g = w.mutable_grad();
      if (!g.defined() || w.dim() <= 1)
        continue;
      // In float64 on the device: reading the norms would make the host wait every step.
      const at::Tensor w_norm = w.norm().to(at::kDouble), g_norm = g.norm().to(at::kDouble);
      // A zero weight or gradient (a fresh zero-initialised layer) keeps the plain step.
      const at::Tensor trust = at::where(
          w_norm.gt(0).logical_and(g_norm.gt(0)),
          lars_eta_ * w_norm / (g_norm + slot.weight_decay * w_norm),
          at::ones_like(w_norm));
      g.add_(w, slot.weight_decay).mul_(trust);
    }
  }
}

void Optimizer::step() {
  adapt_lars_gradients();
  for (auto& optimizer : optimizers_)
    optimizer->step();
}

void Optimizer::save(const std::string& path) const {
  torch::serialize::OutputArchive archive;
  if (optimizers_.size() == 1) {
    optimizers_[0]->save(archive);  // what torch::save writes
    models::save_archive(archive, path);
    return;
  }
  for (size_t i = 0; i < optimizers_.size(); ++i) {
    torch::serialize::OutputArchive part;
    optimizers_[i]->save(part);
    archive.write(std::to_string(i), part);
  }
  models::save_archive(archive, path);
}

void Optimizer::load(const std::string& path) {
  // The state goes where the parameters are, not where it was saved: a GPU run's checkpoint
  // resumes on another device or on a CPU machine.
  if (optimizers_.size() == 1) {
    torch::load(*optimizers_[0], path, device_);
    return;
  }
  torch::serialize::InputArchive archive;
  archive.load_from(path, device_);
  for (size_t i = 0; i < optimizers_.size(); ++i) {
    torch::serialize::InputArchive part;
    archive.read(std::to_string(i), part);
    optimizers_[i]->load(part);
  }
}

}  // namespace uel::train
