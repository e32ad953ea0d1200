#pragma once

// A Method is one training objective (DESIGN.md §2): how many views it needs, the loss of a
// step, what it does at the start of an epoch and after the optimizer step, and the checkpoint
// files it owns. The Trainer asks every method the same questions in the same order and knows
// no method by name; adding one is a file here and a line in the factory (methods.cpp).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"
#include "uel/data/loader.h"
#include "uel/data/sampler.h"
#include "uel/losses/isif.h"
#include "uel/losses/margin.h"
#include "uel/losses/memory_bank.h"
#include "uel/losses/pair_loss.h"
#include "uel/models/embedding_net.h"

namespace uel::methods {

// k-means pseudo-labels (pseudo.*), for udml and for margin with margin.labels=kmeans.
struct PseudoLabelConfig {
  int64_t clusters = 100;       // k-means clusters = pseudo-classes
  int64_t recluster_every = 5;  // epochs between re-clusterings (warm-started)
  int64_t kmeans_n_init = 1;    // restarts of the first clustering (the UDML-SS seed: 10)
  std::string layer = "head";   // features clustered: head (the embedding) | backbone
};

// The rotation-prediction task (udml.rotation_*, isif.rotation_*): `items` images of the global
// batch rotated four ways, a head on the backbone's features predicts the rotation.
struct RotationConfig {
  double weight = 0;    // of the rotation cross-entropy; 0 = no rotation head
  int64_t items = 16;   // images of the global batch rotated four ways
  double lr_scale = 1;  // rotation head's lr / train.lr (the UDML-SS seed: rot_lr = lr)
};

// UDML-SS (udml.*). Defaults are the seed's published recipe where it has one.
struct UdmlConfig {
  int64_t items_per_class = 5;  // k of the m x k batches; m = train.batch_size / k
  std::string loss = "ms";      // ms (multi-similarity, the seed) | contrastive
  losses::MultiSimilarityConfig ms;
  losses::ContrastiveConfig contrastive;
  RotationConfig rotation{0.1, 16, 1};  // the seed's weight 0.1
  // Of ISIF's instance loss (isif.*) on two views of every batch image, added to the pair loss;
  // 0 = the seed (one view). The views of one image are the only positives k-means cannot get
  // wrong.
  double instance_weight = 0;
};

// Margin loss with distance-weighted sampling (margin.*), the MXNet Gluon seed's defaults.
struct MarginMethodConfig {
  losses::MarginConfig loss;
  std::string labels = "dataset";  // dataset (supervised, the seed) | kmeans (pseudo.*)
  int64_t items_per_class = 5;     // k of the m x k batches (the seed's batch_k)
  // beta's own SGD (momentum 0.9, no weight decay), on the gradient of the batch-mean loss: the
  // seed's --lr-beta 0.1 acts on a gradient divided by its per-device batch of 70.
  double beta_lr = 0.1 / 70;
};

// The options of every method; `name` picks the one that trains (train.method).
struct MethodConfig {
  std::string name = "isif";
  losses::IsifConfig isif;
  // ISIF with the rotation task added to its loss (not in the ISIF seed; off by default).
  RotationConfig isif_rotation;
  losses::NceConfig nce;
  PseudoLabelConfig pseudo;
  UdmlConfig udml;
  MarginMethodConfig margin;
};

// What the trainer hands a method when it builds it.
struct MethodSetup {
  std::shared_ptr<comm::Communicator> comm;
  int64_t train_items = 0;  // sampler positions: the training set after class filter and split
  int64_t global_batch = 0;
  int64_t embedding_dim = 0;
  int64_t feature_dim = 0;  // backbone features (EmbeddingNet::features)
  int64_t num_classes = 0;  // classes of the dataset's labels
  uint64_t seed = 0;
  at::TensorOptions options;  // training device and dtype
};

// What a method sees at the start of an epoch.
struct EpochContext {
  models::EmbeddingNet& model;
  int64_t epoch;
  // > 0 when a run resumes inside the epoch: the epoch's start-of-epoch work happened before
  // the checkpoint and is in it (Method::load), so it must not run again.
  int64_t first_step;
  // Collective: L2-normalised features of `layer` (head | backbone, as eval.layer) of this
  // rank's shard_range of the training positions (eval transform), in position order.
  std::function<at::Tensor(const std::string& layer)> embed_train;
  // Ground-truth label of every training position: for diagnostics only (unsupervised methods
  // never train on them).
  const std::vector<int64_t>& train_labels;
};

// Trainable parameters a method adds to the embedding net (a head, a learnable margin), with
// their own learning rate and weight decay.
struct ParamGroup {
  std::vector<std::pair<std::string, at::Tensor>> params;  // named for GradSync's errors
  double lr_scale = 1;                                     // of the schedule's learning rate
  std::optional<double> weight_decay;                      // default: train.weight_decay
  // Its own optimizer instead of train.optimizer: "sgd" with `momentum` (margin's beta, as the
  // seed's second trainer).
  std::optional<std::string> optimizer;
  double momentum = 0.9;
  // Its own base learning rate instead of lr_scale x train.lr; the schedule still shapes it.
  std::optional<double> lr;
};

// What a method sees of the step it computes.
struct StepContext {
  models::EmbeddingNet& model;
  int64_t global_step;      // steps done before this one
  int64_t micro_batch = 0;  // which of the step's train.accumulate micro-batches this is
};

class Method {
 public:
  virtual ~Method() = default;

  virtual const std::string& name() const = 0;
  // Trainable parameters beyond the embedding net, in a fixed order (the optimizer's groups).
  virtual std::vector<ParamGroup> parameter_groups() {
    return {};
  }
  // Collective, before the loader starts an epoch (re-clustering methods work here).
  virtual void start_epoch(const EpochContext& /*context*/) {}
  // The sampler of the training positions when the method has its own (batches by cluster),
  // asked after start_epoch; null keeps the shuffled pass over all positions.
  virtual std::shared_ptr<const data::Sampler> sampler() const {
    return nullptr;
  }
  // The loss of one step on this rank's batch (collective), ready for backward: averaged over
  // ranks it is the global-batch loss, and so is its gradient averaged by GradSync. With
  // train.accumulate, called once per micro-batch before one after_step.
  virtual at::Tensor loss(const data::Batch& batch, const StepContext& step) = 0;
  // After the optimizer step, without gradients (memory-bank updates).
  virtual void after_step() {}
  // Figures of the steps since the last call, appended to the metrics line (e.g. rotation
  // accuracy). Collective: every rank calls it at the same steps.
  virtual std::vector<std::pair<std::string, double>> step_metrics() {
    return {};
  }
  // This rank's part of a checkpoint in `dir` (collective; the trainer writes DONE after).
  virtual void save(const std::string& /*dir*/) const {}
  // Reads back what save wrote, from a checkpoint saved on `saved_world_size` ranks.
  virtual void load(const std::string& /*dir*/, int /*saved_world_size*/) {}
  // Features of this rank's shard of the training positions kept by the method (a memory
  // bank), served to the kNN as eval.features=bank; undefined when the method keeps none.
  virtual at::Tensor train_features() const {
    return {};
  }
  // Appended to the message that stops a run on a non-finite loss.
  virtual std::string divergence_hint() const = 0;
};

// The valid values of train.method.
std::vector<std::string> method_names();
// Checks the options of the method `config.name` (ConfigError listing the valid names when it
// is unknown). Run before any collective work starts.
void validate(const MethodConfig& config);
// Augmented views per instance the loader makes for the method.
int views(const MethodConfig& config);
// Whether the method keeps training features of its own (Method::train_features).
bool keeps_train_features(const MethodConfig& config);
// Whether the loss is a mean of per-sample terms, so that micro-batches accumulated into one
// step (train.accumulate) give the large batch's gradient. Not so where the batch is the
// method's universe: ISIF's softmax over the batch, the pair and margin losses' pairs.
bool sums_over_samples(const MethodConfig& config);
// "" when each rank's gradient is the mean of its own samples' gradients, the other ranks'
// samples entering only as detached values (ISIF's keys, NCE's bank rows), so that the ranks'
// gradients are independent draws at batch / ranks (train.noise_scale). Otherwise the options
// whose loss backpropagates into other ranks' samples ("--train.method=isif with
// --isif.key_grad=true"): the pair and margin losses (pairs across ranks), isif.key_grad.
std::string cross_rank_gradients(const MethodConfig& config);
std::unique_ptr<Method> make_method(const MethodConfig& config, const MethodSetup& setup);

}  // namespace uel::methods
