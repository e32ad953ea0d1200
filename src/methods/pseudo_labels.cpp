#include "pseudo_labels.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "uel/cluster/kmeans.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/eval/cluster_metrics.h"

namespace uel::methods {

void validate(const PseudoLabelConfig& c) {
  UEL_CHECK_CONFIG(c.clusters >= 2, "--pseudo.clusters must be at least 2, got {}", c.clusters);
  UEL_CHECK_CONFIG(
      c.recluster_every >= 1,
      "--pseudo.recluster_every must be at least 1 epoch, got {}",
      c.recluster_every);
  UEL_CHECK_CONFIG(c.kmeans_n_init >= 1, "--pseudo.kmeans_n_init must be at least 1");
  models::check_layer("pseudo.layer", c.layer);
}

PseudoLabels::PseudoLabels(
    const PseudoLabelConfig& config,
    const MethodSetup& setup,
    int64_t items_per_class,
    const std::string& option_prefix)
    : config_(config),
      comm_(setup.comm),
      seed_(setup.seed),
      global_batch_(setup.global_batch),
      items_per_class_(items_per_class),
      train_items_(setup.train_items),
      feature_dim_(config.layer == "backbone" ? setup.feature_dim : setup.embedding_dim),
      options_(setup.options) {
  UEL_CHECK_CONFIG(
      global_batch_ % items_per_class_ == 0,
      "--train.batch_size {} is not a whole number of clusters of --{}.items_per_class {}",
      global_batch_,
      option_prefix,
      items_per_class_);
  const int64_t per_batch = global_batch_ / items_per_class_;
  UEL_CHECK_CONFIG(
      config_.clusters >= per_batch,
      "--pseudo.clusters {} is fewer than the {} clusters a batch draws (--train.batch_size / "
      "--{}.items_per_class)",
      config_.clusters,
      per_batch,
      option_prefix);
  UEL_CHECK_CONFIG(
      config_.clusters <= train_items_,
      "--pseudo.clusters {} exceeds the {} training images",
      config_.clusters,
      train_items_);
}

void PseudoLabels::start_epoch(const EpochContext& context) {
  if (labels_.defined() &&
      (context.first_step > 0 || context.epoch % config_.recluster_every != 0)) {
    return;
  }
  recluster(context);
}

at::Tensor PseudoLabels::of(const at::Tensor& items) const {
  return labels_.index_select(0, items.to(labels_.device()));
}

void PseudoLabels::recluster(const EpochContext& context) {
  const at::Tensor features = context.embed_train(config_.layer);
  cluster::KMeansConfig kmeans;
  kmeans.k = config_.clusters;
  kmeans.n_init = config_.kmeans_n_init;
  kmeans.seed = seed_;
  // Warm start from the last centroids, as the UDML-SS seed does after its first clustering.
  const cluster::KMeansResult result = cluster::kmeans(features, kmeans, *comm_, centroids_);
  centroids_ = result.centroids;
  const at::Tensor all = comm_->all_gather_v(result.assignments).cpu().contiguous();
  set_labels(all);
  const at::Tensor sizes = std::get<0>(result.counts.cpu().sort());
  const int64_t k = sizes.numel();
  log_info(
      "epoch {}: {} clusters of {} images (sizes {} / {} / {} min / median / max, {} empty "
      "re-seeded, {} Lloyd steps, inertia {:.4g}); NMI with the true labels {:.4f} (diagnostic)",
      context.epoch,
      k,
      all.numel(),
      sizes[0].item<int64_t>(),
      sizes[k / 2].item<int64_t>(),
      sizes[k - 1].item<int64_t>(),
      result.empty_reseeded,
      result.iterations,
      result.inertia,
      eval::nmi(at::tensor(context.train_labels, at::kLong), all));
}

void PseudoLabels::set_labels(const at::Tensor& labels) {
  const at::Tensor host = labels.to(at::kCPU, at::kLong).contiguous();
  labels_ = host.to(options_.device());
  sampler_ = std::make_shared<data::ClassBalancedSampler>(
      std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel()),
      global_batch_ / items_per_class_,
      items_per_class_,
      comm_->rank(),
      comm_->size(),
      seed_);
}

void PseudoLabels::save(torch::serialize::OutputArchive& archive) const {
  archive.write("labels", labels_.cpu());
  archive.write("centroids", centroids_.cpu());
}

void PseudoLabels::load(torch::serialize::InputArchive& archive, const std::string& path) {
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
      "'{}' holds {} centroids, --pseudo.clusters is {}",
      path,
      centroids.size(0),
      config_.clusters);
  UEL_CHECK_DATA(
      centroids.size(1) == feature_dim_,
      "'{}' holds {}-wide centroids, --pseudo.layer={} gives {}-wide features: resume with the "
      "run's pseudo.layer",
      path,
      centroids.size(1),
      config_.layer,
      feature_dim_);
  set_labels(labels);
  centroids_ = centroids.to(options_.device(), options_.dtype().toScalarType());
}

}  // namespace uel::methods
