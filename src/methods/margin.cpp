// Margin loss with distance-weighted sampling (Wu et al., ICCV 2017; the seed is the MXNet Gluon
// embedding_learning example): m classes x k images per global batch, negatives drawn by
// 1/q(d) over the global batch, a learnable boundary beta on its own SGD. Labels are the
// dataset's (supervised, the seed) or k-means pseudo-labels (margin.labels=kmeans).

#include <algorithm>
#include <map>
#include <optional>

#include <ATen/ATen.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "factories.h"
#include "method_file.h"
#include "pseudo_labels.h"
#include "uel/core/error.h"
#include "uel/core/rng.h"

namespace uel::methods {
namespace {

constexpr const char* kFile = "margin.pt";

class Margin final : public Method {
 public:
  Margin(
      const MarginMethodConfig& config, const PseudoLabelConfig& pseudo, const MethodSetup& setup)
      : config_(config),
        comm_(setup.comm),
        seed_(setup.seed),
        global_batch_(setup.global_batch),
        options_(setup.options) {
    UEL_CHECK_CONFIG(
        global_batch_ % config_.items_per_class == 0,
        "--train.batch_size {} is not a whole number of classes of --margin.items_per_class {}",
        global_batch_,
        config_.items_per_class);
    // Negatives need a second class in every batch (margin_loss checks it only on CPUs).
    UEL_CHECK_CONFIG(
        global_batch_ >= 2 * config_.items_per_class,
        "--train.batch_size {} holds one class of --margin.items_per_class {}: negatives need at "
        "least two classes per batch",
        global_batch_,
        config_.items_per_class);
    if (config_.labels == "kmeans")
      pseudo_.emplace(pseudo, setup, config_.items_per_class, "margin");
    const int64_t classes = config_.labels == "kmeans" ? pseudo.clusters : setup.num_classes;
    beta_ =
        at::full(
            config_.loss.per_class_beta ? std::vector<int64_t>{classes} : std::vector<int64_t>{},
            config_.loss.beta_init,
            options_)
            .requires_grad_(true);
  }

  const std::string& name() const override {
    static const std::string name = "margin";
    return name;
  }

  std::vector<ParamGroup> parameter_groups() override {
    ParamGroup group;
    group.params.emplace_back("beta", beta_);
    group.weight_decay = 0;
    group.optimizer = "sgd";
    group.momentum = 0.9;
    group.lr = config_.beta_lr;
    return {group};
  }

  void start_epoch(const EpochContext& context) override {
    if (pseudo_) {
      pseudo_->start_epoch(context);
    } else if (!sampler_) {
      check_class_sizes(context.train_labels);
      sampler_ = std::make_shared<data::ClassBalancedSampler>(
          context.train_labels,
          global_batch_ / config_.items_per_class,
          config_.items_per_class,
          comm_->rank(),
          comm_->size(),
          seed_);
    }
  }

  // The sampler would repeat a small class's images inside its block, giving positives at
  // distance 0 and a supervised run that silently trains on duplicates: refuse it up front.
  // (k-means pseudo-classes may be small; there the repeats are the seed's behaviour.)
  void check_class_sizes(const std::vector<int64_t>& labels) const {
    std::map<int64_t, int64_t> sizes;
    for (const int64_t label : labels)
      ++sizes[label];
    const auto smallest =
        std::min_element(sizes.begin(), sizes.end(), [](const auto& a, const auto& b) {
          return a.second < b.second;
        });
    UEL_CHECK_CONFIG(
        smallest == sizes.end() || smallest->second >= config_.items_per_class,
        "--margin.items_per_class {} exceeds the {} training images of class {}: lower it, or "
        "leave the class out with --data.classes",
        config_.items_per_class,
        smallest->second,
        smallest->first);
  }

  std::shared_ptr<const data::Sampler> sampler() const override {
    return pseudo_ ? pseudo_->sampler() : sampler_;
  }

  at::Tensor loss(const data::Batch& batch, const StepContext& step) override {
    const at::Tensor embeddings =
        step.model->forward(batch.views[0].to(options_.dtype().toScalarType()));
    const at::Tensor labels =
        pseudo_ ? pseudo_->of(batch.items) : batch.labels.to(embeddings.device());
    const losses::MarginLoss out = losses::margin_loss(
        embeddings,
        labels,
        beta_,
        stream_key(seed_, RngPurpose::kMarginNegatives, 0, step.global_step),
        config_.items_per_class,
        *comm_,
        config_.loss);
    const at::Tensor active = out.active_fraction.detach().to(at::kDouble);
    active_sum_ = active_sum_.defined() ? active_sum_ + active : active;
    ++steps_;
    return out.loss;
  }

  // The active fraction is global already; beta is the same on every rank (GradSync).
  std::vector<std::pair<std::string, double>> step_metrics() override {
    std::vector<std::pair<std::string, double>> out;
    if (steps_ > 0)
      out.emplace_back("active", active_sum_.item<double>() / steps_);
    out.emplace_back("beta", beta_.mean().item<double>());
    active_sum_ = at::Tensor();
    steps_ = 0;
    return out;
  }

  void save(const std::string& dir) const override {
    if (comm_->rank() != 0)
      return;
    torch::serialize::OutputArchive archive;
    archive.write("beta", beta_.detach().cpu());
    if (pseudo_)
      pseudo_->save(archive);
    save_method_file(archive, dir, kFile);
  }

  void load(const std::string& dir, int /*saved_world_size*/) override {
    torch::serialize::InputArchive archive;
    const std::string path = load_method_file(archive, dir, kFile, name());
    at::Tensor beta;
    archive.read("beta", beta);
    UEL_CHECK_DATA(
        beta.sizes() == beta_.sizes(),
        "'{}' holds {} beta values, this run has {} (--margin.per_class_beta or the classes "
        "differ)",
        path,
        beta.numel(),
        beta_.numel());
    {
      torch::NoGradGuard no_grad;
      beta_.copy_(beta);
    }
    if (pseudo_)
      pseudo_->load(archive, path);
  }

  std::string divergence_hint() const override {
    return "lower --margin.beta_lr";
  }

 private:
  MarginMethodConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  uint64_t seed_;
  int64_t global_batch_;
  at::TensorOptions options_;
  std::optional<PseudoLabels> pseudo_;            // margin.labels=kmeans
  std::shared_ptr<const data::Sampler> sampler_;  // margin.labels=dataset
  at::Tensor beta_;
  at::Tensor active_sum_;
  int64_t steps_ = 0;
};

}  // namespace

std::unique_ptr<Method> make_margin(const MethodConfig& config, const MethodSetup& setup) {
  return std::make_unique<Margin>(config.margin, config.pseudo, setup);
}

void validate_margin(const MethodConfig& config) {
  const MarginMethodConfig& c = config.margin;
  losses::validate(c.loss);
  UEL_CHECK_CONFIG(
      c.labels == "dataset" || c.labels == "kmeans",
      "--margin.labels='{}' is not a label source; use dataset or kmeans",
      c.labels);
  if (c.labels == "kmeans")
    validate(config.pseudo);
  UEL_CHECK_CONFIG(
      c.items_per_class >= 2,
      "--margin.items_per_class must be at least 2 (an anchor needs a positive), got {}",
      c.items_per_class);
  UEL_CHECK_CONFIG(c.beta_lr > 0, "--margin.beta_lr must be positive, got {}", c.beta_lr);
}

}  // namespace uel::methods
