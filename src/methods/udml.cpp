// UDML-SS (Cao et al. 2019; the seed is xuefeicao/UDML_SS): k-means pseudo-labels re-computed
// every few epochs, batches of m clusters x k images, a pair loss over the global batch on the
// pseudo-labels, and a rotation-prediction head as self-supervised regulariser. Optionally
// (udml.instance_weight) ISIF's instance loss on a second view of every batch image.

#include <ATen/ATen.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "factories.h"
#include "method_file.h"
#include "pseudo_labels.h"
#include "uel/core/error.h"
#include "uel/losses/isif.h"

namespace uel::methods {
namespace {

constexpr int64_t kRotations = 4;  // 0, 90, 180, 270 degrees
constexpr int64_t kRotationHidden = 512;
constexpr const char* kFile = "udml.pt";

class Udml final : public Method {
 public:
  Udml(
      const UdmlConfig& config,
      const losses::IsifConfig& isif,
      const PseudoLabelConfig& pseudo,
      const MethodSetup& setup)
      : config_(config),
        isif_(isif),
        comm_(setup.comm),
        global_batch_(setup.global_batch),
        options_(setup.options),
        pseudo_(pseudo, setup, config.items_per_class, "udml") {
    if (config_.rotation_weight > 0) {
      // Every rank rotates the same number of images, or SyncBatchNorm's collectives differ.
      const int world = comm_->size();
      UEL_CHECK_CONFIG(
          global_batch_ % config_.rotation_items == 0 &&
              (global_batch_ / world) % (global_batch_ / config_.rotation_items) == 0,
          "--udml.rotation_items {} must divide --train.batch_size {} so that each of the {} "
          "ranks rotates the same number of images",
          config_.rotation_items,
          global_batch_,
          world);
      rotation_head_ = torch::nn::Sequential(
          torch::nn::Linear(setup.feature_dim, kRotationHidden),
          torch::nn::ReLU(),
          torch::nn::Linear(kRotationHidden, kRotations));
      rotation_head_->to(options_.device(), options_.dtype().toScalarType());
    }
  }

  const std::string& name() const override {
    static const std::string name = "udml";
    return name;
  }

  std::vector<ParamGroup> parameter_groups() override {
    if (!rotation_head_)
      return {};
    ParamGroup group;
    for (const auto& p : rotation_head_->named_parameters())
      group.params.emplace_back("rotation_head." + p.key(), p.value());
    group.lr_scale = config_.rotation_lr_scale;
    return {group};
  }

  void start_epoch(const EpochContext& context) override {
    pseudo_.start_epoch(context);
  }

  std::shared_ptr<const data::Sampler> sampler() const override {
    return pseudo_.sampler();
  }

  at::Tensor loss(const data::Batch& batch, const StepContext& step) override {
    const at::ScalarType dtype = options_.dtype().toScalarType();
    const at::Tensor images = batch.views[0].to(dtype);
    const int64_t b = images.size(0);
    // With the instance term both views go through the network in one batch (as ISIF's), and
    // the pair loss sees the first views' embeddings.
    const at::Tensor both = config_.instance_weight > 0
                                ? step.model->forward(at::cat({images, batch.views[1].to(dtype)}))
                                : at::Tensor();
    const at::Tensor embeddings =
        both.defined() ? both.narrow(0, 0, b) : step.model->embed(step.model->features(images));
    const at::Tensor labels = pseudo_.of(batch.items);
    const losses::PairLoss pair =
        config_.loss == "ms"
            ? losses::multi_similarity_loss(embeddings, labels, *comm_, config_.ms)
            : losses::contrastive_loss(embeddings, labels, *comm_, config_.contrastive);
    skipped_sum_ += pair.skipped_fraction;
    ++pair_steps_;
    at::Tensor total = pair.loss;
    if (both.defined())
      total = total + config_.instance_weight * losses::isif_loss(both, *comm_, isif_);
    if (!rotation_head_)
      return total;
    // Every (B / rotation_items)-th image of the global batch, in all four rotations: the seed
    // draws rotation_items batch images with replacement; the global batch is already a random
    // draw, and a fixed stride keeps the chosen images the same on any world size.
    const int64_t stride = global_batch_ / config_.rotation_items;
    const int64_t first = (stride - (comm_->rank() * b) % stride) % stride;
    const at::Tensor picked = images.index_select(
        0,
        at::arange(first, b, stride, at::TensorOptions().dtype(at::kLong).device(images.device())));
    std::vector<at::Tensor> copies;
    for (int64_t r = 0; r < kRotations; ++r)
      copies.push_back(at::rot90(picked, r, {2, 3}));
    const at::Tensor rotation_labels =
        at::arange(kRotations, at::TensorOptions().dtype(at::kLong).device(images.device()))
            .repeat_interleave(picked.size(0));
    const at::Tensor logits = rotation_head_->forward(step.model->features(at::cat(copies)));
    // Mean over the global rotation batch once averaged over ranks, as every loss here.
    const at::Tensor rotation_loss =
        at::cross_entropy_loss(logits, rotation_labels, {}, at::Reduction::Sum) *
        (static_cast<double>(comm_->size()) / (kRotations * config_.rotation_items));
    {
      torch::NoGradGuard no_grad;
      const at::Tensor correct = logits.argmax(1).eq(rotation_labels).sum().to(at::kDouble);
      rotation_correct_ = rotation_correct_.defined() ? rotation_correct_ + correct : correct;
      rotation_seen_ += logits.size(0);
    }
    return total + config_.rotation_weight * rotation_loss;
  }

  std::vector<std::pair<std::string, double>> step_metrics() override {
    std::vector<std::pair<std::string, double>> out;
    if (pair_steps_ > 0)
      out.emplace_back("skipped", skipped_sum_ / pair_steps_);  // global already
    skipped_sum_ = 0;
    pair_steps_ = 0;
    if (rotation_head_) {
      at::Tensor counts =
          at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(comm_->device()));
      if (rotation_correct_.defined())
        counts[0] = rotation_correct_.to(counts.device());
      counts[1] = static_cast<double>(rotation_seen_);
      comm_->all_reduce(counts, comm::ReduceOp::kSum);
      const at::Tensor host = counts.cpu();
      const double seen = host[1].item<double>();
      out.emplace_back("rotation_acc", seen > 0 ? 100 * host[0].item<double>() / seen : 0);
      rotation_correct_ = at::Tensor();
      rotation_seen_ = 0;
    }
    return out;
  }

  void save(const std::string& dir) const override {
    if (comm_->rank() != 0)
      return;  // pseudo-labels, centroids and head are the same on every rank
    torch::serialize::OutputArchive archive;
    pseudo_.save(archive);
    if (rotation_head_) {
      for (const auto& p : rotation_head_->named_parameters())
        archive.write("rotation_head." + p.key(), p.value().cpu());
    }
    save_method_file(archive, dir, kFile);
  }

  void load(const std::string& dir, int /*saved_world_size*/) override {
    torch::serialize::InputArchive archive;
    const std::string path = load_method_file(archive, dir, kFile, name());
    pseudo_.load(archive, path);
    if (rotation_head_) {
      torch::NoGradGuard no_grad;
      for (auto& p : rotation_head_->named_parameters()) {
        at::Tensor value;
        archive.read("rotation_head." + p.key(), value);
        p.value().copy_(value);
      }
    }
  }

  std::string divergence_hint() const override {
    return "lower --udml.neg_scale";
  }

 private:
  UdmlConfig config_;
  losses::IsifConfig isif_;
  std::shared_ptr<comm::Communicator> comm_;
  int64_t global_batch_;
  at::TensorOptions options_;
  PseudoLabels pseudo_;
  torch::nn::Sequential rotation_head_{nullptr};
  double skipped_sum_ = 0;
  int64_t pair_steps_ = 0;
  at::Tensor rotation_correct_;
  int64_t rotation_seen_ = 0;
};

}  // namespace

std::unique_ptr<Method> make_udml(const MethodConfig& config, const MethodSetup& setup) {
  return std::make_unique<Udml>(config.udml, config.isif, config.pseudo, setup);
}

void validate_udml(const MethodConfig& config) {
  const UdmlConfig& c = config.udml;
  validate(config.pseudo);
  UEL_CHECK_CONFIG(
      c.items_per_class >= 2,
      "--udml.items_per_class must be at least 2 (an image needs a positive), got {}",
      c.items_per_class);
  UEL_CHECK_CONFIG(
      c.loss == "ms" || c.loss == "contrastive",
      "--udml.loss='{}' is not a pair loss; use ms or contrastive",
      c.loss);
  losses::validate(c.ms);
  losses::validate(c.contrastive);
  UEL_CHECK_CONFIG(c.rotation_weight >= 0, "--udml.rotation_weight must be >= 0");
  UEL_CHECK_CONFIG(c.rotation_items >= 1, "--udml.rotation_items must be at least 1");
  UEL_CHECK_CONFIG(c.rotation_lr_scale > 0, "--udml.rotation_lr_scale must be positive");
  UEL_CHECK_CONFIG(c.instance_weight >= 0, "--udml.instance_weight must be >= 0");
}

}  // namespace uel::methods
