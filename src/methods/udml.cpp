// UDML-SS (Cao et al. 2019; the seed is xuefeicao/UDML_SS): k-means pseudo-labels re-computed
// every few epochs, batches of m clusters x k images, a pair loss over the global batch on the
// pseudo-labels, and a rotation-prediction head as self-supervised regulariser.

#include <algorithm>
#include <filesystem>

#include <ATen/ATen.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "factories.h"
#include "uel/cluster/kmeans.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/eval/cluster_metrics.h"

namespace uel::methods {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kRotations = 4;  // 0, 90, 180, 270 degrees
constexpr int64_t kRotationHidden = 512;

class Udml final : public Method {
 public:
  Udml(const UdmlConfig& config, const MethodSetup& setup)
      : config_(config),
        comm_(setup.comm),
        seed_(setup.seed),
        global_batch_(setup.global_batch),
        train_items_(setup.train_items),
        options_(setup.options) {
    const int world = comm_->size();
    UEL_CHECK_CONFIG(
        global_batch_ % config_.items_per_class == 0,
        "--train.batch_size {} is not a whole number of clusters of --udml.items_per_class {}",
        global_batch_,
        config_.items_per_class);
    const int64_t per_batch = global_batch_ / config_.items_per_class;
    UEL_CHECK_CONFIG(
        config_.clusters >= per_batch,
        "--udml.clusters {} is fewer than the {} clusters a batch draws (--train.batch_size / "
        "--udml.items_per_class)",
        config_.clusters,
        per_batch);
    UEL_CHECK_CONFIG(
        config_.clusters <= train_items_,
        "--udml.clusters {} exceeds the {} training images",
        config_.clusters,
        train_items_);
    if (config_.rotation_weight > 0) {
      // Every rank rotates the same number of images, or SyncBatchNorm's collectives differ.
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
    // A run resumed inside an epoch, or between re-clusterings, has its labels from the
    // checkpoint; every other epoch start at a multiple of recluster_every re-clusters.
    if (!labels_.empty() &&
        (context.first_step > 0 || context.epoch % config_.recluster_every != 0)) {
      return;
    }
    recluster(context);
  }

  std::shared_ptr<const data::Sampler> sampler() const override {
    return sampler_;
  }

  at::Tensor loss(const data::Batch& batch, const StepContext& step) override {
    const at::Tensor images = batch.views[0].to(options_.dtype().toScalarType());
    const at::Tensor embeddings = step.model->embed(step.model->features(images));
    const at::Tensor labels =
        labels_on_device_.index_select(0, batch.items.to(labels_on_device_.device()));
    const losses::PairLoss pair =
        config_.loss == "ms"
            ? losses::multi_similarity_loss(embeddings, labels, *comm_, config_.ms)
            : losses::contrastive_loss(embeddings, labels, *comm_, config_.contrastive);
    skipped_sum_ += pair.skipped_fraction;
    ++pair_steps_;
    if (!rotation_head_)
      return pair.loss;
    // Every (B / rotation_items)-th image of the global batch, in all four rotations: the seed
    // draws rotation_items batch images with replacement; the global batch is already a random
    // draw, and a fixed stride keeps the chosen images the same on any world size.
    const int64_t b = images.size(0), stride = global_batch_ / config_.rotation_items;
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
    return pair.loss + config_.rotation_weight * rotation_loss;
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
      return;  // pseudo-labels and centroids are the same on every rank
    torch::serialize::OutputArchive archive;
    archive.write("labels", at::tensor(labels_, at::kLong));
    archive.write("centroids", centroids_.cpu());
    if (rotation_head_) {
      for (const auto& p : rotation_head_->named_parameters())
        archive.write("rotation_head." + p.key(), p.value().cpu());
    }
    const std::string path = (fs::path(dir) / kFile).string();
    archive.save_to(path + ".tmp");
    fs::rename(path + ".tmp", path);
  }

  void load(const std::string& dir, int /*saved_world_size*/) override {
    const std::string path = (fs::path(dir) / kFile).string();
    UEL_CHECK_DATA(
        fs::exists(path),
        "'{}' has no {}: it was not saved by --train.method=udml; start from its weights with "
        "--model.weights={}/model.pt instead",
        dir,
        kFile,
        dir);
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    at::Tensor labels, centroids;
    archive.read("labels", labels);
    archive.read("centroids", centroids);
    UEL_CHECK_DATA(
        labels.numel() == train_items_,
        "'{}' holds pseudo-labels of {} images, the training set has {}: another dataset, class "
        "filter or validation split",
        path,
        labels.numel(),
        train_items_);
    UEL_CHECK_DATA(
        centroids.size(0) == config_.clusters,
        "'{}' holds {} centroids, --udml.clusters is {}",
        path,
        centroids.size(0),
        config_.clusters);
    if (rotation_head_) {
      torch::NoGradGuard no_grad;
      for (auto& p : rotation_head_->named_parameters()) {
        at::Tensor value;
        archive.read("rotation_head." + p.key(), value);
        p.value().copy_(value);
      }
    }
    set_labels(std::vector<int64_t>(
        labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel()));
    centroids_ = centroids.to(options_.device(), options_.dtype().toScalarType());
  }

  std::string divergence_hint() const override {
    return "lower --udml.neg_scale";
  }

 private:
  static constexpr const char* kFile = "udml.pt";

  void recluster(const EpochContext& context) {
    const at::Tensor features = context.embed_train();
    cluster::KMeansConfig kmeans;
    kmeans.k = config_.clusters;
    kmeans.n_init = config_.kmeans_n_init;
    kmeans.max_iter = 100;
    kmeans.seed = seed_;
    // Warm start from the last centroids, as the seed does after its first clustering.
    const cluster::KMeansResult result = cluster::kmeans(features, kmeans, *comm_, centroids_);
    centroids_ = result.centroids;
    const at::Tensor all = comm_->all_gather_v(result.assignments).cpu().contiguous();
    set_labels(
        std::vector<int64_t>(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel()));
    std::vector<int64_t> sizes(
        result.counts.cpu().data_ptr<int64_t>(),
        result.counts.cpu().data_ptr<int64_t>() + config_.clusters);
    std::sort(sizes.begin(), sizes.end());
    const double nmi = eval::nmi(at::tensor(context.train_labels, at::kLong), all);
    log_info(
        "epoch {}: {} clusters of {} images (sizes {} / {} / {} min / median / max, {} empty "
        "re-seeded, {} Lloyd steps, inertia {:.4g}); NMI with the true labels {:.4f} (diagnostic)",
        context.epoch,
        config_.clusters,
        all.numel(),
        sizes.front(),
        sizes[sizes.size() / 2],
        sizes.back(),
        result.empty_reseeded,
        result.iterations,
        result.inertia,
        nmi);
  }

  void set_labels(std::vector<int64_t> labels) {
    labels_ = std::move(labels);
    labels_on_device_ = at::tensor(labels_, at::kLong).to(options_.device());
    sampler_ = std::make_shared<data::ClassBalancedSampler>(
        labels_,
        global_batch_ / config_.items_per_class,
        config_.items_per_class,
        comm_->rank(),
        comm_->size(),
        seed_);
  }

  UdmlConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  uint64_t seed_;
  int64_t global_batch_;
  int64_t train_items_;
  at::TensorOptions options_;
  torch::nn::Sequential rotation_head_{nullptr};
  std::vector<int64_t> labels_;  // pseudo-label of every training position
  at::Tensor labels_on_device_;
  at::Tensor centroids_;
  std::shared_ptr<const data::Sampler> sampler_;
  double skipped_sum_ = 0;
  int64_t pair_steps_ = 0;
  at::Tensor rotation_correct_;
  int64_t rotation_seen_ = 0;
};

}  // namespace

std::unique_ptr<Method> make_udml(const MethodConfig& config, const MethodSetup& setup) {
  return std::make_unique<Udml>(config.udml, setup);
}

void validate_udml(const MethodConfig& config) {
  const UdmlConfig& c = config.udml;
  UEL_CHECK_CONFIG(c.clusters >= 2, "--udml.clusters must be at least 2, got {}", c.clusters);
  UEL_CHECK_CONFIG(
      c.recluster_every >= 1,
      "--udml.recluster_every must be at least 1 epoch, got {}",
      c.recluster_every);
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
  UEL_CHECK_CONFIG(c.kmeans_n_init >= 1, "--udml.kmeans_n_init must be at least 1");
}

}  // namespace uel::methods
