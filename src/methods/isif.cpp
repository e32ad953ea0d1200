// ISIF (Ye et al., CVPR 2019): two views per instance, softmax over the global batch.

#include <ATen/ATen.h>

#include "factories.h"

namespace uel::methods {
namespace {

class Isif final : public Method {
 public:
  Isif(const losses::IsifConfig& config, const MethodSetup& setup)
      : config_(config), comm_(setup.comm), dtype_(setup.options.dtype().toScalarType()) {}

  const std::string& name() const override {
    static const std::string name = "isif";
    return name;
  }
  at::Tensor loss(const data::Batch& batch, const StepContext& step) override {
    // Stacked as the loss expects: first views, then second views, of the same instances.
    const at::Tensor embeddings =
        step.model->forward(at::cat({batch.views[0], batch.views[1]}).to(dtype_));
    return losses::isif_loss(embeddings, *comm_, config_);
  }
  std::string divergence_hint() const override {
    return "raise --isif.temperature";
  }

 private:
  losses::IsifConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  at::ScalarType dtype_;
};

}  // namespace

std::unique_ptr<Method> make_isif(const MethodConfig& config, const MethodSetup& setup) {
  return std::make_unique<Isif>(config.isif, setup);
}

}  // namespace uel::methods
