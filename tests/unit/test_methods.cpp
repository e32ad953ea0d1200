// Methods through their public interface (make_method): the UDML-SS step's rotation and instance
// terms and ISIF's rotation term against their definitions written out, UDML-SS's gradient against
// central finite differences (float64), the layer its pseudo-labels cluster (pseudo.layer), also
// across a checkpoint, and ISIF's rotation head across one.

#include <torch/torch.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "uel/comm/communicator.h"
#include "uel/core/error.h"
#include "uel/losses/isif.h"
#include "uel/methods/method.h"
#include "uel/models/embedding_net.h"

namespace uel::methods {
namespace {

// One step on 16 random images in float64, for UDML-SS (2 k-means pseudo-classes, a batch of 8 =
// 2 x 4) and ISIF: 4 of them rotated four ways, a perturbed second view of each. The
// model is built before the method so that the method (and its head) draw the same initial weights
// whatever rotation_weight is.
struct MethodStep {
  std::shared_ptr<comm::LocalCommunicator> comm = std::make_shared<comm::LocalCommunicator>();
  models::EmbeddingNet model{nullptr};
  at::Tensor images;
  MethodSetup setup;
  std::vector<int64_t> truth = std::vector<int64_t>(16, 0);
  data::Batch batch;
  std::vector<std::string> clustered;  // the layers the method asked to embed, in order

  MethodStep() {
    torch::manual_seed(3);
    models::ModelConfig model_config;
    model_config.width = 4;
    model_config.low_dim = 8;
    model_config.in_channels = 1;
    model = models::EmbeddingNet(model_config, comm);
    model->to(torch::kDouble);
    model->train();
    images = torch::randn({16, 1, 12, 12}, torch::kDouble);
    setup.comm = comm;
    setup.train_items = 16;
    setup.global_batch = 8;
    setup.embedding_dim = model_config.low_dim;
    setup.feature_dim = model->feature_dim();
    setup.num_classes = 2;
    setup.options = torch::TensorOptions().dtype(torch::kDouble);
    batch.items = torch::arange(8, torch::kLong) * 2;
    batch.indices = batch.items;
    batch.labels = torch::zeros({8}, torch::kLong);
    const at::Tensor first = images.index_select(0, batch.items);
    batch.views = {first, first + 0.3 * torch::randn_like(first)};
  }

  std::unique_ptr<Method> method(
      double rotation_weight,
      const std::string& layer = "head",
      double instance_weight = 0,
      bool key_grad = false) {
    MethodConfig config;
    config.isif.key_grad = key_grad;
    config.name = "udml";
    config.pseudo.clusters = 2;
    config.pseudo.layer = layer;
    config.udml.items_per_class = 4;
    config.udml.rotation.items = 4;
    config.udml.rotation.weight = rotation_weight;
    config.udml.instance_weight = instance_weight;
    EXPECT_EQ(views(config), instance_weight > 0 ? 2 : 1);
    torch::manual_seed(5);
    std::unique_ptr<Method> out = make_method(config, setup);
    out->start_epoch(EpochContext{
        model,
        0,
        0,
        [&](const std::string& asked) {
          clustered.push_back(asked);
          torch::NoGradGuard no_grad;
          if (asked != "backbone")
            return model->forward(images);
          const at::Tensor features = model->features(images);
          return features / features.norm(2, 1, true);
        },
        truth});
    return out;
  }

  // ISIF on the same batch's two views, with the rotation task when rotation_weight > 0.
  std::unique_ptr<Method> isif(double rotation_weight) {
    MethodConfig config;
    config.isif_rotation.items = 4;
    config.isif_rotation.weight = rotation_weight;
    validate(config);
    torch::manual_seed(5);
    return make_method(config, setup);
  }

  at::Tensor loss(Method& method) {
    return method.loss(batch, StepContext{model, 0});
  }

  // The rotation cross-entropy written out: every second image of the first views (8 / 4
  // rotated items) in rotations 0, 1, 2, 3 labelled by rotation, through features and the
  // method's head's two layers, mean over the 16 copies.
  double rotation_loss(Method& method) {
    std::map<std::string, at::Tensor> head;
    for (const ParamGroup& group : method.parameter_groups()) {
      for (const auto& [name, p] : group.params)
        head[name] = p.detach();
    }
    EXPECT_EQ(head.size(), 4u);
    torch::NoGradGuard no_grad;
    const at::Tensor picked = batch.views[0].index_select(0, torch::arange(0, 8, 2));
    std::vector<at::Tensor> copies;
    for (int64_t r = 0; r < 4; ++r)
      copies.push_back(torch::rot90(picked, r, {2, 3}));
    const at::Tensor hidden = torch::relu(torch::nn::functional::linear(
        model->features(torch::cat(copies)),
        head.at("rotation_head.0.weight"),
        head.at("rotation_head.0.bias")));
    const at::Tensor logits = torch::nn::functional::linear(
        hidden, head.at("rotation_head.2.weight"), head.at("rotation_head.2.bias"));
    return torch::nn::functional::cross_entropy(logits, torch::arange(4).repeat_interleave(4))
        .item<double>();
  }
};

std::filesystem::path scratch_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("uel-test-methods-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

// The rotation term of the loss: rotation_weight x the rotation cross-entropy written out
// (MethodStep::rotation_loss), added to the pair loss of the same step without a head.
TEST(UdmlRotationHead, LossIsThePairLossPlusTheWeightedRotationCrossEntropy) {
  MethodStep step;
  const std::unique_ptr<Method> with_head = step.method(0.5);
  const double total = step.loss(*with_head).item<double>();
  const double pair = step.loss(*step.method(0)).item<double>();
  const double rotation = step.rotation_loss(*with_head);
  EXPECT_GT(rotation, 0.5);
  EXPECT_NEAR(total, pair + 0.5 * rotation, 1e-12);
}

// isif.rotation_weight w: ISIF's loss on the two views plus w x the rotation cross-entropy of
// the first views; without it ISIF's loss alone and no parameters of its own.
TEST(IsifRotationHead, LossIsTheIsifLossPlusTheWeightedRotationCrossEntropy) {
  MethodStep step;
  const std::unique_ptr<Method> plain = step.isif(0);
  EXPECT_TRUE(plain->parameter_groups().empty());
  const double isif = step.loss(*plain).item<double>();
  EXPECT_NEAR(
      isif,
      losses::isif_loss(
          step.model->forward(torch::cat(step.batch.views)), *step.comm, losses::IsifConfig{})
          .item<double>(),
      1e-12);
  const std::unique_ptr<Method> with_head = step.isif(0.5);
  const double total = step.loss(*with_head).item<double>();
  const double rotation = step.rotation_loss(*with_head);
  EXPECT_GT(rotation, 0.5);
  EXPECT_NEAR(total, isif + 0.5 * rotation, 1e-12);
  // The head learns from the rotation term.
  step.loss(*with_head).backward();
  const at::Tensor grad = with_head->parameter_groups().front().params.front().second.grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad.abs().sum().item<double>(), 0);

  MethodConfig config;
  config.isif_rotation.lr_scale = 0;
  EXPECT_THROW(validate(config), ConfigError);
}

// ISIF's rotation head goes into the checkpoint (isif.pt) and comes back; without a head ISIF
// writes nothing and reads nothing, so checkpoints of older runs still load.
TEST(IsifRotationHead, CheckpointHoldsTheHead) {
  MethodStep step;
  const std::filesystem::path dir = scratch_dir("isif");
  step.isif(0)->save(dir.string());
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  step.isif(0)->load(dir.string(), 1);
  EXPECT_THROW(step.isif(0.5)->load(dir.string(), 1), DataError);

  const std::unique_ptr<Method> trained = step.isif(0.5);
  const auto saved = trained->parameter_groups().front().params;
  {
    torch::NoGradGuard no_grad;
    for (const auto& [name, p] : saved)
      p.add_(1);
  }
  trained->save(dir.string());
  const std::unique_ptr<Method> resumed = step.isif(0.5);
  resumed->load(dir.string(), 1);
  const auto loaded = resumed->parameter_groups().front().params;
  ASSERT_EQ(saved.size(), loaded.size());
  for (size_t i = 0; i < saved.size(); ++i)
    EXPECT_TRUE(torch::equal(saved[i].second, loaded[i].second)) << saved[i].first;
  EXPECT_NEAR(step.loss(*resumed).item<double>(), step.loss(*trained).item<double>(), 1e-12);
  std::filesystem::remove_all(dir);
}

// udml.instance_weight w adds w x ISIF's loss on the two views, forwarded as one batch, whose
// first half the pair loss sees: L(w) = P + w I, with I computed here by losses::isif_loss.
TEST(UdmlInstanceTerm, LossIsThePairLossPlusTheWeightedIsifLoss) {
  MethodStep step;
  const double half = step.loss(*step.method(0, "head", 0.5)).item<double>();
  const double one = step.loss(*step.method(0, "head", 1)).item<double>();
  const double instance =
      losses::isif_loss(
          step.model->forward(torch::cat(step.batch.views)), *step.comm, losses::IsifConfig{})
          .item<double>();
  EXPECT_GT(instance, 1);
  EXPECT_NEAR(one - half, 0.5 * instance, 1e-12);

  MethodConfig config;
  config.name = "udml";
  config.udml.instance_weight = -1;
  EXPECT_THROW(validate(config), ConfigError);
}

// pseudo.layer picks the features k-means sees at the start of an epoch.
TEST(UdmlPseudoLabels, ClusterTheLayerPseudoLayerNames) {
  MethodStep step;
  step.method(0, "head");
  step.method(0, "backbone");
  EXPECT_EQ(step.clustered, (std::vector<std::string>{"head", "backbone"}));

  MethodConfig config;
  config.name = "udml";
  config.pseudo.clusters = 2;
  config.udml.items_per_class = 4;
  config.pseudo.layer = "pool5";
  EXPECT_THROW(validate(config), ConfigError);
}

// A checkpoint's centroids are as wide as the layer they clustered: resuming with the other
// pseudo.layer stops with an error naming the option, not a shape error inside k-means.
TEST(UdmlPseudoLabels, ResumingWithAnotherLayerIsAnError) {
  MethodStep step;
  ASSERT_NE(step.setup.embedding_dim, step.setup.feature_dim);
  const std::filesystem::path dir = scratch_dir("udml");
  step.method(0, "head")->save(dir.string());
  step.method(0, "head")->load(dir.string(), 1);
  try {
    step.method(0, "backbone")->load(dir.string(), 1);
    ADD_FAILURE() << "loaded head centroids for pseudo.layer=backbone";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("--pseudo.layer=backbone"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// Analytic gradients of the whole UDML-SS loss equal central differences, for every entry of
// the rotation head's small tensors and spread entries of the backbone, without and with the
// instance term (with isif.key_grad: the seed's detached keys make the gradient differ from the
// loss's by design). Only the rotation term reaches the head; the backbone gets every term, so a
// rotated copy or second view cut from the graph (or a head outside it) shows up. The pair loss
// mines pairs by margin and ReLUs have kinks: h = 1e-7 stays clear of both here (1e-6 crossed a
// kink of one backbone entry with the instance term).
class UdmlGradient : public ::testing::TestWithParam<double> {};

TEST_P(UdmlGradient, MatchesFiniteDifferences) {
  MethodStep step;
  const std::unique_ptr<Method> method = step.method(0.5, "head", GetParam(), true);
  auto& model = step.model;
  const auto loss = [&] { return step.loss(*method); };

  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const ParamGroup& group : method->parameter_groups())
    params.insert(params.end(), group.params.begin(), group.params.end());
  ASSERT_EQ(params.size(), 4u) << "the head: two linear layers";
  for (const auto& p : model->named_parameters())
    params.emplace_back(p.key(), p.value());
  for (auto& [name, p] : params) {
    if (p.grad().defined())
      p.mutable_grad().zero_();
  }
  loss().backward();

  const double h = 1e-7;
  int64_t head_checked = 0;
  for (auto& [name, p] : params) {
    const at::Tensor flat = p.detach().view(-1);
    const at::Tensor grad = p.grad().view(-1);
    // Every entry of the small tensors, 6 spread entries of the big ones.
    const int64_t n = flat.numel(), stride = std::max<int64_t>(1, n / 6);
    for (int64_t i = 0; i < n; i += stride) {
      const double saved = flat[i].item<double>();
      double plus = 0, minus = 0;
      {
        torch::NoGradGuard no_grad;
        flat[i] = saved + h;
        plus = loss().item<double>();
        flat[i] = saved - h;
        minus = loss().item<double>();
        flat[i] = saved;
      }
      const double numeric = (plus - minus) / (2 * h), analytic = grad[i].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric)) << name << "[" << i << "]";
      if (name.rfind("rotation_head.", 0) == 0 && std::abs(analytic) > 1e-4)
        ++head_checked;
    }
  }
  EXPECT_GE(head_checked, 10) << "the head's gradient is mostly zero: the test checks nothing";
}

INSTANTIATE_TEST_SUITE_P(InstanceWeight, UdmlGradient, ::testing::Values(0.0, 0.5));

}  // namespace
}  // namespace uel::methods
