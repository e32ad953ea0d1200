// ISIF (Ye et al., CVPR 2019): two views per instance, softmax over the global batch. Optionally
// (isif.rotation_weight, not in the seed) the rotation-prediction task on the first views, as
// UDML-SS's.

#include <ATen/ATen.h>
#include <torch/serialize.h>

#include "factories.h"
#include "method_file.h"
#include "rotation.h"

namespace uel::methods {
namespace {

constexpr const char* kFile = "isif.pt";  // the rotation head, when there is one

class Isif final : public Method {
 public:
  Isif(const MethodConfig& config, const MethodSetup& setup)
      : config_(config.isif),
        comm_(setup.comm),
        dtype_(setup.options.dtype().toScalarType()),
        rotation_(config.isif_rotation, setup, "isif") {}

  const std::string& name() const override {
    static const std::string name = "isif";
    return name;
  }
  std::vector<ParamGroup> parameter_groups() override {
    return rotation_.parameter_groups();
  }
  at::Tensor loss(const data::Batch& batch, const StepContext& step) override {
    const at::Tensor first = batch.views[0].to(dtype_);
    // Stacked as the loss expects: first views, then second views, of the same instances.
    const at::Tensor embeddings = step.model->forward(at::cat({first, batch.views[1].to(dtype_)}));
    at::Tensor total = losses::isif_loss(embeddings, *comm_, config_);
    if (rotation_.enabled())
      total = total + rotation_.loss(first, step.model);
    return total;
  }
  std::vector<std::pair<std::string, double>> step_metrics() override {
    std::vector<std::pair<std::string, double>> out;
    rotation_.append_metrics(out);
    return out;
  }
  void save(const std::string& dir) const override {
    if (!rotation_.enabled() || comm_->rank() != 0)
      return;  // the head is the same on every rank
    torch::serialize::OutputArchive archive;
    rotation_.save(archive);
    save_method_file(archive, dir, kFile);
  }
  void load(const std::string& dir, int /*saved_world_size*/) override {
    if (!rotation_.enabled())
      return;
    torch::serialize::InputArchive archive;
    load_method_file(archive, dir, kFile, name());
    rotation_.load(archive);
  }
  std::string divergence_hint() const override {
    return "raise --isif.temperature";
  }

 private:
  losses::IsifConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  at::ScalarType dtype_;
  RotationTask rotation_;
};

}  // namespace

std::unique_ptr<Method> make_isif(const MethodConfig& config, const MethodSetup& setup) {
  return std::make_unique<Isif>(config, setup);
}

void validate_isif(const MethodConfig& config) {
  validate(config.isif_rotation, "isif");
}

}  // namespace uel::methods
