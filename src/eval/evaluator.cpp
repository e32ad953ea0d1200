#include "uel/eval/evaluator.h"

#include <sstream>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "uel/cluster/kmeans.h"
#include "uel/core/error.h"
#include "uel/core/shard.h"
#include "uel/data/sampler.h"
#include "uel/eval/cluster_metrics.h"

namespace uel::eval {

namespace {

at::Tensor normalized_rows(const at::Tensor& x) {
  return x / x.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
}

// uint8 [N, H, W, C] -> [N, H*W*C] in [0, 1].
at::Tensor flat_pixels(const at::Tensor& images) {
  return images.reshape({images.size(0), -1}).to(at::kFloat).div(255.0);
}

}  // namespace

Protocols parse_protocols(const std::string& list) {
  Protocols out;
  std::stringstream in(list);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name == "knn") {
      out.knn = true;
    } else if (name == "recall") {
      out.recall = true;
    } else {
      UEL_CHECK_CONFIG(
          name == "nmi",
          "--eval.protocol: '{}' is not a protocol; give a comma-separated list of knn, recall, "
          "nmi",
          name);
      out.nmi = true;
    }
  }
  UEL_CHECK_CONFIG(
      out.knn || out.recall || out.nmi,
      "--eval.protocol is empty; give a comma-separated list of knn, recall, nmi");
  return out;
}

std::string Evaluation::json_fields() const {
  std::vector<std::string> fields;
  if (knn) {
    fields.push_back(fmt::format(
        R"("knn_top1": {:.4f}, "knn_top5": {:.4f}, "k": {}, "tau": {})",
        knn->top1,
        knn->top5,
        knn_config.k,
        knn_config.tau));
  }
  if (recall) {
    for (size_t i = 0; i < recall->ks.size(); ++i)
      fields.push_back(fmt::format(R"("recall@{}": {:.4f})", recall->ks[i], recall->recall[i]));
  }
  if (nmi)
    fields.push_back(fmt::format(R"("nmi": {:.6f}, "ari": {:.6f})", *nmi, *ari));
  fields.push_back(fmt::format(R"("queries": {})", queries));
  return fmt::format("{}", fmt::join(fields, ", "));
}

std::string Evaluation::summary() const {
  std::vector<std::string> parts;
  if (knn) {
    parts.push_back(fmt::format(
        "kNN top-1 {:.2f}% top-5 {:.2f}% (k={}, tau={})",
        knn->top1,
        knn->top5,
        knn_config.k,
        knn_config.tau));
  }
  if (recall) {
    std::vector<std::string> r;
    for (size_t i = 0; i < recall->ks.size(); ++i)
      r.push_back(fmt::format("R@{} {:.2f}%", recall->ks[i], recall->recall[i]));
    parts.push_back(fmt::format("{}", fmt::join(r, " ")));
  }
  if (nmi)
    parts.push_back(fmt::format("NMI {:.4f} ARI {:.4f}", *nmi, *ari));
  return fmt::format("{} on {} test items", fmt::join(parts, ", "), queries);
}

Evaluator::Evaluator(
    EvalConfig config,
    const data::DataConfig& data,
    const data::TrainData& train,
    std::shared_ptr<comm::Communicator> comm,
    at::TensorOptions options,
    uint64_t seed)
    : config_(std::move(config)),
      comm_(std::move(comm)),
      options_(options),
      seed_(seed),
      augmenter_(train.augmenter) {
  models::check_layer("eval.layer", config_.layer);
  if (!train.validation.empty()) {
    // Tuning: the held-out part of the training set is the query set.
    validation_ = true;
    test_ = train.dataset;
    test_path_ = data.train;
    test_positions_ = train.validation;
  } else if (!data.test.empty()) {
    auto test = std::make_shared<data::ImageDataset>(data.test, data.memory_mb << 20);
    const bool own_filter = !data.test_classes.empty();
    test_positions_ = data::select_classes(
        test->labels(),
        data::parse_class_filter(
            own_filter ? data.test_classes : data.classes,
            test->info().num_classes,
            own_filter ? "data.test_classes" : "data.classes"),
        data.test);
    test_ = test;
    test_path_ = data.test;
  }
  if (config_.gallery.empty()) {
    gallery_ = train.dataset;
    gallery_positions_ = train.positions;
  } else {
    auto gallery = std::make_shared<data::ImageDataset>(config_.gallery, data.memory_mb << 20);
    gallery_positions_ = data::select_classes(
        gallery->labels(),
        data::parse_class_filter(data.classes, gallery->info().num_classes),
        config_.gallery);
    gallery_ = gallery;
  }
}

std::string Evaluator::split() const {
  return validation_ ? "validation" : "test";
}

at::Tensor Evaluator::shard_features(
    const data::ImageDataset& dataset,
    const std::vector<int64_t>& positions,
    int64_t dim,
    const std::function<at::Tensor(const at::Tensor& images)>& features) const {
  const ShardRange shard =
      shard_range(static_cast<int64_t>(positions.size()), comm_->rank(), comm_->size());
  std::vector<at::Tensor> parts;
  for (int64_t begin = shard.begin; begin < shard.end; begin += config_.batch_size) {
    const int64_t end = std::min(shard.end, begin + config_.batch_size);
    std::vector<int64_t> indices(positions.begin() + begin, positions.begin() + end);
    parts.push_back(features(dataset.read(indices).to(options_.device())));
  }
  if (parts.empty())
    return at::zeros({0, dim}, options_);
  return at::cat(parts);
}

at::Tensor Evaluator::model_batch(
    models::EmbeddingNet& model, const at::Tensor& images, bool backbone) const {
  const at::Tensor x = augmenter_->eval_view(images).to(options_.dtype());
  return backbone ? normalized_rows(model->features(x)) : model->forward(x);
}

at::Tensor Evaluator::model_features(
    models::EmbeddingNet& model,
    const data::ImageDataset& dataset,
    const std::vector<int64_t>& positions,
    bool backbone) const {
  model->eval();
  torch::NoGradGuard no_grad;
  return shard_features(
      dataset,
      positions,
      backbone ? model->feature_dim() : model->config().low_dim,
      [&](const at::Tensor& images) { return model_batch(model, images, backbone); });
}

at::Tensor Evaluator::embed_images(models::EmbeddingNet& model, const at::Tensor& images) const {
  model->eval();
  torch::NoGradGuard no_grad;
  return model_batch(model, images.to(options_.device()), config_.layer == "backbone");
}

at::Tensor Evaluator::pixel_mean(
    const data::ImageDataset& dataset, const std::vector<int64_t>& positions) const {
  const data::DatasetInfo& info = dataset.info();
  const int64_t dim = info.height * info.width * info.channels;
  const at::Tensor rows = shard_features(
      dataset, positions, dim, [&](const at::Tensor& images) { return flat_pixels(images); });
  at::Tensor sum = rows.to(at::kDouble).sum(0);
  comm_->all_reduce(sum, comm::ReduceOp::kSum);
  return sum / static_cast<double>(std::max<size_t>(positions.size(), 1));
}

at::Tensor Evaluator::pixels(
    const data::ImageDataset& dataset,
    const std::vector<int64_t>& positions,
    const at::Tensor& mean) const {
  return shard_features(dataset, positions, mean.numel(), [&](const at::Tensor& images) {
    return normalized_rows(flat_pixels(images).to(at::kDouble) - mean).to(options_.dtype());
  });
}

at::Tensor Evaluator::embed(
    models::EmbeddingNet& model,
    const data::ImageDataset& dataset,
    const std::vector<int64_t>& positions) const {
  if (config_.features == "pixels")
    return pixels(dataset, positions, pixel_mean(dataset, positions));
  return model_features(model, dataset, positions, config_.layer == "backbone");
}

at::Tensor Evaluator::embed_layer(
    models::EmbeddingNet& model,
    const data::ImageDataset& dataset,
    const std::vector<int64_t>& positions,
    const std::string& layer) const {
  // A programming error: the options naming a layer check it where they are parsed.
  UEL_CHECK(models::is_layer(layer), "unknown layer '{}'", layer);
  return model_features(model, dataset, positions, layer == "backbone");
}

at::Tensor Evaluator::labels_of(
    const data::ImageDataset& d, const std::vector<int64_t>& positions) const {
  const ShardRange shard =
      shard_range(static_cast<int64_t>(positions.size()), comm_->rank(), comm_->size());
  std::vector<int64_t> out;
  for (int64_t i = shard.begin; i < shard.end; ++i)
    out.push_back(d.labels()[positions[i]]);
  return at::tensor(out, at::kLong).to(options_.device());
}

Evaluation Evaluator::evaluate(
    models::EmbeddingNet& model, const at::Tensor& gallery_features) const {
  UEL_CHECK_CONFIG(test_ != nullptr, "evaluation needs --data.test or --data.val_fraction");
  const Protocols protocols = parse_protocols(config_.protocol);
  Evaluation result;
  result.queries = static_cast<int64_t>(test_positions_.size());
  result.knn_config = config_.knn;
  const at::Tensor test_features = embed(model, *test_, test_positions_);
  const at::Tensor test_labels = labels_of(*test_, test_positions_);
  if (protocols.knn) {
    at::Tensor gallery = gallery_features, queries = test_features;
    if (config_.features == "pixels") {
      // Queries and gallery centred by the same mean, the gallery's.
      const at::Tensor mean = pixel_mean(*gallery_, gallery_positions_);
      gallery = pixels(*gallery_, gallery_positions_, mean);
      queries = pixels(*test_, test_positions_, mean);
    } else if (!gallery.defined()) {
      gallery = embed(model, *gallery_, gallery_positions_);
    }
    // Queries: every rank holds all of them.
    result.knn = weighted_knn(
        gallery,
        labels_of(*gallery_, gallery_positions_),
        comm_->all_gather_v(queries),
        comm_->all_gather_v(test_labels),
        gallery_->info().num_classes,
        config_.knn,
        *comm_);
  }
  if (protocols.recall) {
    const std::vector<int64_t> ks(config_.recall_k.begin(), config_.recall_k.end());
    result.recall = recall_at_k(test_features, test_labels, ks, *comm_);
  }
  if (protocols.nmi) {
    // As many clusters as test classes, restarts as sklearn's KMeans default; the features never
    // leave their rank, only the assignments are gathered.
    const at::Tensor all_labels = comm_->all_gather_v(test_labels).cpu();
    cluster::KMeansConfig kmeans;
    kmeans.k = std::get<0>(at::_unique(all_labels)).numel();
    kmeans.n_init = 10;
    kmeans.seed = seed_;
    const cluster::KMeansResult clusters = cluster::kmeans(test_features, kmeans, *comm_);
    const at::Tensor assignments = comm_->all_gather_v(clusters.assignments).cpu();
    result.nmi = eval::nmi(all_labels, assignments);
    result.ari = eval::ari(all_labels, assignments);
  }
  return result;
}

}  // namespace uel::eval
