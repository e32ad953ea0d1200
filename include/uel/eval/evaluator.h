#pragma once

// A run's evaluation (DESIGN.md §2, eval): the query set (the test set, or the part of the
// training set held out by data.val_fraction), the kNN gallery, the eval transform and the
// embedding pass, and the protocols on top of the metric kernels (weighted kNN, Recall@K, NMI).
// Training-time evaluation, `uel eval` and `uel embed` all go through it.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"
#include "uel/data/pipeline.h"
#include "uel/eval/knn.h"
#include "uel/eval/recall.h"
#include "uel/models/embedding_net.h"

namespace uel::eval {

struct EvalConfig {
  int64_t every = 1;  // epochs; 0 = never during training
  // Comma-separated: knn (seen categories: test queries against the training set), recall
  // (Recall@K within the test set) and nmi (k-means of the test set against its labels).
  std::string protocol = "knn";
  std::vector<double> recall_k = {1, 2, 4, 8};
  // kNN gallery: "" = the training set, or another dataset file (STL-10 trains on
  // train+unlabeled and votes with the labelled train split).
  std::string gallery;
  // Training-set features of the kNN: "recompute" embeds the training set (eval transform);
  // "bank" uses the features the method keeps, as they are (nce's memory bank; lemniscate's
  // monitor, no extra pass); "pixels" evaluates no model: every image is its flattened pixels
  // less the per-pixel mean (the gallery's for kNN, the query set's for Recall@K and NMI),
  // L2-normalised, the baseline a learned embedding must beat.
  std::string features = "recompute";
  // What the model gives: "head" the L2-normalised embedding, "backbone" the backbone's pooled
  // features below the head, L2-normalised.
  std::string layer = "head";
  KnnConfig knn;
  int64_t batch_size = 256;
};

// Which protocols eval.protocol asks for ("knn,recall,nmi"); ConfigError naming the valid ones.
struct Protocols {
  bool knn = false;
  bool recall = false;
  bool nmi = false;
};
Protocols parse_protocols(const std::string& list);

// The figures of one evaluation; a protocol not asked for is absent.
struct Evaluation {
  std::optional<KnnResult> knn;
  std::optional<RecallResult> recall;
  std::optional<double> nmi;  // arithmetic-mean normalisation (sklearn's default)
  std::optional<double> ari;
  KnnConfig knn_config;
  int64_t queries = 0;  // test items evaluated
  // "knn_top1": ..., "recall@1": ..., "nmi": ... (JSON object members, no braces).
  std::string json_fields() const;
  std::string summary() const;  // one line for the log
};

class Evaluator {
 public:
  // `train`: the run's training data (its dataset, positions, held-out part and eval transform);
  // `options`: the device and dtype the model runs in; `seed`: the k-means restarts' seed.
  Evaluator(
      EvalConfig config,
      const data::DataConfig& data,
      const data::TrainData& train,
      std::shared_ptr<comm::Communicator> comm,
      at::TensorOptions options,
      uint64_t seed);

  // L2-normalised features of this rank's shard of `positions` in `dataset` (shards are
  // contiguous and in rank order, so gathering them restores the order): the model's
  // (eval.layer, eval transform) or, with eval.features = pixels, the centred pixels.
  // Collective.
  at::Tensor embed(
      models::EmbeddingNet& model,
      const data::ImageDataset& dataset,
      const std::vector<int64_t>& positions) const;
  // The model's features (eval.layer, eval transform) of `images`, uint8 [n, H, W, C] of the
  // training set's size; not collective (every rank embeds what it is given).
  at::Tensor embed_images(models::EmbeddingNet& model, const at::Tensor& images) const;
  // The model's L2-normalised features of `layer` (head | backbone; eval transform) whatever
  // eval.features and eval.layer say: what the methods see of the training set between epochs.
  at::Tensor embed_layer(
      models::EmbeddingNet& model,
      const data::ImageDataset& dataset,
      const std::vector<int64_t>& positions,
      const std::string& layer) const;
  // This rank's shard of `positions`' labels (on the device), the same shard embed() takes.
  at::Tensor labels_of(const data::ImageDataset& d, const std::vector<int64_t>& positions) const;
  // The protocols of eval.protocol on the query set (collective): weighted kNN against the
  // gallery (embedded, or `gallery_features`, this rank's shard of the training set's features
  // the method keeps, with eval.features = bank), Recall@K within the query set, NMI and ARI of a
  // k-means with as many clusters as query classes.
  Evaluation evaluate(models::EmbeddingNet& model, const at::Tensor& gallery_features = {}) const;
  // "test", or "validation" when data.val_fraction holds out part of the training set.
  std::string split() const;
  // The query set: its file, the dataset open on it (null when there is none) and the rows of
  // it evaluated (the test set's rows in its class filter, or the held-out rows of the training
  // set); an empty path when there is none.
  const std::string& query_path() const {
    return test_path_;
  }
  const std::shared_ptr<const data::ImageDataset>& query_dataset() const {
    return test_;
  }
  const std::vector<int64_t>& query_positions() const {
    return test_positions_;
  }

 private:
  // The embedding (eval transform), or the backbone's features L2-normalised.
  at::Tensor model_features(
      models::EmbeddingNet& model,
      const data::ImageDataset& dataset,
      const std::vector<int64_t>& positions,
      bool backbone) const;
  // One batch of images (on the model's device) through the model, eval transform.
  at::Tensor model_batch(
      models::EmbeddingNet& model, const at::Tensor& images, bool backbone) const;
  // This rank's shard of `positions` in `dataset` through `features`, in eval.batch_size steps.
  at::Tensor shard_features(
      const data::ImageDataset& dataset,
      const std::vector<int64_t>& positions,
      int64_t dim,
      const std::function<at::Tensor(const at::Tensor& images)>& features) const;
  // The flattened pixels less `mean` (float64 [H*W*C]), L2-normalised.
  at::Tensor pixels(
      const data::ImageDataset& dataset,
      const std::vector<int64_t>& positions,
      const at::Tensor& mean) const;
  // The per-pixel mean over `positions` (collective: each rank sums its shard).
  at::Tensor pixel_mean(
      const data::ImageDataset& dataset, const std::vector<int64_t>& positions) const;

  EvalConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  at::TensorOptions options_;
  uint64_t seed_;
  std::shared_ptr<const data::Augmenter> augmenter_;
  bool validation_ = false;
  std::shared_ptr<const data::ImageDataset> test_;  // null: nothing to evaluate on
  std::string test_path_;
  std::vector<int64_t> test_positions_;
  std::shared_ptr<const data::ImageDataset> gallery_;  // the training set by default
  std::vector<int64_t> gallery_positions_;
};

}  // namespace uel::eval
