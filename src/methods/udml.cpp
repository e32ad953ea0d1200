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
#include "rotation.h"
#include "uel/core/error.h"
#include "uel/losses/isif.h"

namespace uel::methods {
namespace {

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
        options_(setup.options),
        pseudo_(pseudo, setup, config.items_per_class, "udml"),
        rotation_(config.rotation, setup, "udml") {}

  const std::string& name() const override {
    static const std::string name = "udml";
    return name;
  }

  std::vector<ParamGroup> parameter_groups() override {
    return rotation_.parameter_groups();
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
    if (rotation_.enabled())
      total = total + rotation_.loss(images, step.model);
    return total;
  }

  std::vector<std::pair<std::string, double>> step_metrics() override {
    std::vector<std::pair<std::string, double>> out;
    if (pair_steps_ > 0)
      out.emplace_back("skipped", skipped_sum_ / pair_steps_);  // global already
    skipped_sum_ = 0;
    pair_steps_ = 0;
    rotation_.append_metrics(out);
    return out;
  }

  void save(const std::string& dir) const override {
    if (comm_->rank() != 0)
      return;  // pseudo-labels, centroids and head are the same on every rank
    torch::serialize::OutputArchive archive;
    pseudo_.save(archive);
    rotation_.save(archive);
    save_method_file(archive, dir, kFile);
  }

  void load(const std::string& dir, int /*saved_world_size*/) override {
    torch::serialize::InputArchive archive;
    const std::string path = load_method_file(archive, dir, kFile, name());
    pseudo_.load(archive, path);
    rotation_.load(archive);
  }

  std::string divergence_hint() const override {
    return "lower --udml.neg_scale";
  }

 private:
  UdmlConfig config_;
  losses::IsifConfig isif_;
  std::shared_ptr<comm::Communicator> comm_;
  at::TensorOptions options_;
  PseudoLabels pseudo_;
  RotationTask rotation_;
  double skipped_sum_ = 0;
  int64_t pair_steps_ = 0;
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
  validate(c.rotation, "udml");
  UEL_CHECK_CONFIG(c.instance_weight >= 0, "--udml.instance_weight must be >= 0");
}

}  // namespace uel::methods
