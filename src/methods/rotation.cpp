#include "rotation.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "uel/core/error.h"

namespace uel::methods {
namespace {

constexpr int64_t kRotations = 4;  // 0, 90, 180, 270 degrees
constexpr int64_t kHidden = 512;
constexpr const char* kPrefix = "rotation_head.";

}  // namespace

void validate(const RotationConfig& config, const std::string& option_prefix) {
  UEL_CHECK_CONFIG(config.weight >= 0, "--{}.rotation_weight must be >= 0", option_prefix);
  UEL_CHECK_CONFIG(config.items >= 1, "--{}.rotation_items must be at least 1", option_prefix);
  UEL_CHECK_CONFIG(config.lr_scale > 0, "--{}.rotation_lr_scale must be positive", option_prefix);
}

RotationTask::RotationTask(
    const RotationConfig& config, const MethodSetup& setup, const std::string& option_prefix)
    : config_(config), comm_(setup.comm), global_batch_(setup.global_batch) {
  if (config_.weight == 0)
    return;
  // Every rank rotates the same number of images, or SyncBatchNorm's collectives differ.
  const int world = comm_->size();
  UEL_CHECK_CONFIG(
      global_batch_ % config_.items == 0 &&
          (global_batch_ / world) % (global_batch_ / config_.items) == 0,
      "--{}.rotation_items {} must divide --train.batch_size {} so that each of the {} ranks "
      "rotates the same number of images",
      option_prefix,
      config_.items,
      global_batch_,
      world);
  head_ = torch::nn::Sequential(
      torch::nn::Linear(setup.feature_dim, kHidden),
      torch::nn::ReLU(),
      torch::nn::Linear(kHidden, kRotations));
  head_->to(setup.options.device(), setup.options.dtype().toScalarType());
}

std::vector<ParamGroup> RotationTask::parameter_groups() const {
  if (!enabled())
    return {};
  ParamGroup group;
  for (const auto& p : head_->named_parameters())
    group.params.emplace_back(kPrefix + p.key(), p.value());
  group.lr_scale = config_.lr_scale;
  return {group};
}

at::Tensor RotationTask::loss(const at::Tensor& images, models::EmbeddingNet& model) {
  UEL_CHECK(enabled(), "RotationTask::loss without a rotation head (rotation_weight 0)");
  // Every (B / items)-th image of the global batch, in all four rotations: the seed draws `items`
  // batch images with replacement; the global batch is already a random draw, and a fixed stride
  // keeps the chosen images the same on any world size.
  const int64_t b = images.size(0);
  const int64_t stride = global_batch_ / config_.items;
  const int64_t first = (stride - (comm_->rank() * b) % stride) % stride;
  const at::TensorOptions longs = at::TensorOptions().dtype(at::kLong).device(images.device());
  const at::Tensor picked = images.index_select(0, at::arange(first, b, stride, longs));
  std::vector<at::Tensor> copies;
  for (int64_t r = 0; r < kRotations; ++r)
    copies.push_back(at::rot90(picked, r, {2, 3}));
  const at::Tensor labels = at::arange(kRotations, longs).repeat_interleave(picked.size(0));
  const at::Tensor logits = head_->forward(model->features(at::cat(copies)));
  {
    torch::NoGradGuard no_grad;
    const at::Tensor correct = logits.argmax(1).eq(labels).sum().to(at::kDouble);
    correct_ = correct_.defined() ? correct_ + correct : correct;
    seen_ += logits.size(0);
  }
  const at::Tensor mean = at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum) *
                          (static_cast<double>(comm_->size()) / (kRotations * config_.items));
  return config_.weight * mean;
}

void RotationTask::append_metrics(std::vector<std::pair<std::string, double>>& out) {
  if (!enabled())
    return;
  at::Tensor counts =
      at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(comm_->device()));
  if (correct_.defined())
    counts[0] = correct_.to(counts.device());
  counts[1] = static_cast<double>(seen_);
  comm_->all_reduce(counts, comm::ReduceOp::kSum);
  const at::Tensor host = counts.cpu();
  const double seen = host[1].item<double>();
  out.emplace_back("rotation_acc", seen > 0 ? 100 * host[0].item<double>() / seen : 0);
  correct_ = at::Tensor();
  seen_ = 0;
}

void RotationTask::save(torch::serialize::OutputArchive& archive) const {
  if (!enabled())
    return;
  for (const auto& p : head_->named_parameters())
    archive.write(kPrefix + p.key(), p.value().cpu());
}

void RotationTask::load(torch::serialize::InputArchive& archive) {
  if (!enabled())
    return;
  torch::NoGradGuard no_grad;
  for (auto& p : head_->named_parameters()) {
    at::Tensor value;
    archive.read(kPrefix + p.key(), value);
    p.value().copy_(value);
  }
}

}  // namespace uel::methods
