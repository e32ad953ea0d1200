#include "uel/cli/config.h"

#include <cmath>

#include <fmt/format.h>

#include "uel/core/error.h"
#include "uel/methods/method.h"
#include "uel/models/embedding_net.h"

namespace uel::cli {
namespace {

// PREFIX.rotation_weight / _items / _lr_scale of a method's rotation task.
void add_rotation_options(
    OptionSet& o,
    const std::string& prefix,
    methods::RotationConfig& rotation,
    const std::string& weight_remark) {
  o.add(
      prefix + ".rotation_weight",
      &rotation.weight,
      "weight of the rotation-prediction loss " + weight_remark,
      OptionSet::non_negative<double>());
  o.add(
      prefix + ".rotation_items",
      &rotation.items,
      "images of the global batch rotated by 0/90/180/270 degrees",
      OptionSet::positive<int64_t>());
  o.add(
      prefix + ".rotation_lr_scale",
      &rotation.lr_scale,
      "rotation head's learning rate / train.lr",
      OptionSet::positive<double>());
}

}  // namespace

void Config::declare(OptionSet& o) {
  declare_data(o);
  declare_model(o);
  declare_train(o);
  declare_comm(o);
  declare_bench(o);
  o.add_validator([this] { validate(); });
}

void Config::declare_data(OptionSet& o) {
  o.add("data.train", &data.train, "training set (HDF5 from `uel prepare`)");
  o.add("data.test", &data.test, "test set (HDF5)");
  o.add("data.classes", &data.classes, "class filter, e.g. 0-4 or 0,2,5-7 (all = every class)");
  o.add(
      "data.test_classes",
      &data.test_classes,
      "class filter of data.test (default: data.classes); unseen categories: e.g. 5-9");
  o.add(
      "data.workers",
      &data.workers,
      "background loader threads per rank",
      OptionSet::positive<int>());
  o.add("data.prefetch", &data.prefetch, "batches prepared ahead", OptionSet::positive<int>());
  o.add(
      "data.memory_mb",
      &data.memory_mb,
      "hold datasets up to this size in memory (MB)",
      OptionSet::non_negative<int64_t>());
  o.add(
      "data.drop_last",
      &data.drop_last,
      "end epochs at the last full batch (false: pad it from the epoch's start)");
  o.add<double>(
      "data.val_fraction",
      &data.val_fraction,
      "hold out this fraction of the training set as kNN queries (tuning without the test set)",
      [](const double& v) {
        return v >= 0 && v < 1 ? std::string()
                               : describe_must_be("in [0, 1)", fmt::format("{}", v));
      });

  o.add(
      "aug.size",
      &aug.size,
      "output side of the random crop (0 = input height)",
      OptionSet::non_negative<int64_t>());
  o.add("aug.crop_scale_min", &aug.crop_scale_min, "RandomResizedCrop smallest area fraction");
  o.add("aug.crop_scale_max", &aug.crop_scale_max, "RandomResizedCrop largest area fraction");
  o.add("aug.crop_ratio_min", &aug.crop_ratio_min, "RandomResizedCrop smallest aspect ratio");
  o.add("aug.crop_ratio_max", &aug.crop_ratio_max, "RandomResizedCrop largest aspect ratio");
  o.add("aug.brightness", &aug.brightness, "ColorJitter brightness strength");
  o.add("aug.contrast", &aug.contrast, "ColorJitter contrast strength");
  o.add("aug.saturation", &aug.saturation, "ColorJitter saturation strength (RGB only)");
  o.add("aug.hue", &aug.hue, "ColorJitter hue strength, <= 0.5 (RGB only)");
  o.add("aug.grayscale_p", &aug.grayscale_p, "RandomGrayscale probability (RGB only)");
  o.add("aug.flip_p", &aug.flip_p, "horizontal flip probability");
  o.add("aug.rotation", &aug.rotation, "rotate views by random quarter turns (labels for UDML)");
  o.add("aug.erase_p", &aug.erase_p, "RandomErasing probability (a rectangle set to the mean)");
  o.add("aug.erase_scale_min", &aug.erase_scale_min, "RandomErasing smallest area fraction");
  o.add("aug.erase_scale_max", &aug.erase_scale_max, "RandomErasing largest area fraction");
  o.add("aug.mean", &aug.mean, "per-channel mean on [0,1] pixels (empty = from the training set)");
  o.add("aug.std", &aug.std, "per-channel std on [0,1] pixels (empty = from the training set)");
}

void Config::declare_model(OptionSet& o) {
  o.add_choice("model.arch", &model.arch, models::backbone_names(), "backbone");
  o.add_choice(
      "model.stem",
      &model.stem,
      {"cifar", "imagenet"},
      "ResNet stem: cifar (3x3, no max-pool) or imagenet");
  o.add("model.low_dim", &model.low_dim, "embedding dimension", OptionSet::positive<int64_t>());
  o.add(
      "model.pool_grid",
      &model.pool_grid,
      "backbone pooling: 1 = global average, G = average to a G x G map, flattened (keeps layout)",
      OptionSet::positive<int64_t>());
  o.add(
      "model.head_hidden",
      &model.head_hidden,
      "0 = a linear head; H = a projection MLP: Linear(H), BatchNorm, ReLU, then the linear head",
      OptionSet::non_negative<int64_t>());
  o.add(
      "model.width",
      &model.width,
      "small_cnn: channels of the first layer",
      OptionSet::positive<int64_t>());
  o.add(
      "model.depth",
      &model.depth,
      "small_cnn: 3x3 conv layers per stage (of four)",
      OptionSet::positive<int64_t>());
  o.add(
      "model.sync_bn",
      &model.sync_bn,
      "batch-norm statistics over all ranks (world-size invariant)");
  o.add(
      "model.weights",
      &weights,
      "initial weights (a model.pt of a checkpoint or `uel` weights archive)");
}

void Config::declare_train(OptionSet& o) {
  o.add_choice(
      "train.method",
      &method.name,
      methods::method_names(),
      "isif (two views, global-batch softmax), nce (sharded memory bank) udml (k-means "
      "pseudo-labels, pair loss, rotation) or margin (distance-weighted sampling)");
  o.add(
      "train.batch_size",
      &train.batch_size,
      "global batch in instances (each gives the method's views)",
      OptionSet::positive<int64_t>());
  o.add(
      "train.accumulate",
      &train.accumulate,
      "micro-batches per step (batch_size / accumulate each), gradients summed before one "
      "all-reduce; methods whose loss is a mean over samples (nce)",
      OptionSet::positive<int64_t>());
  o.add("train.epochs", &train.epochs, "epochs of the schedule", OptionSet::positive<int64_t>());
  o.add(
      "train.max_steps",
      &train.max_steps,
      "stop after this many steps (0 = no cap); resumes continue",
      OptionSet::non_negative<int64_t>());
  o.add("train.lr", &train.schedule.lr, "base learning rate", OptionSet::positive<double>());
  o.add_choice(
      "train.schedule",
      &train.schedule.schedule,
      {"step", "cosine", "constant"},
      "learning-rate schedule");
  o.add(
      "train.milestones",
      &train.schedule.milestones,
      "step schedule: epochs where the factor changes");
  o.add(
      "train.milestone_factors",
      &train.schedule.factors,
      "step schedule: lr multiplier from each milestone");
  o.add(
      "train.warmup_epochs",
      &train.schedule.warmup_epochs,
      "linear warm-up from lr/100",
      OptionSet::non_negative<double>());
  o.add_choice(
      "train.lr_scaling",
      &train.schedule.lr_scaling,
      {"none", "linear", "sqrt"},
      "lr x global batch / 256 (linear) or x sqrt(global batch / 256) (sqrt)");
  o.add_choice(
      "train.optimizer",
      &train.optimizer.name,
      {"sgd", "lars", "adam", "adamw"},
      "sgd (momentum), lars (layer-wise trust ratio over momentum SGD, large batches), adam "
      "(coupled L2 weight decay, as torch.optim.Adam) or adamw");
  o.add(
      "train.lars_eta",
      &train.optimizer.lars_eta,
      "LARS trust coefficient eta",
      OptionSet::positive<double>());
  o.add(
      "train.momentum",
      &train.optimizer.momentum,
      "SGD and LARS momentum",
      OptionSet::non_negative<double>());
  o.add(
      "train.weight_decay",
      &train.optimizer.weight_decay,
      "weight decay of the embedding net (all its parameters, as the seeds)",
      OptionSet::non_negative<double>());
  o.add("train.adam_beta1", &train.optimizer.beta1, "Adam/AdamW beta1");
  o.add("train.adam_beta2", &train.optimizer.beta2, "Adam/AdamW beta2");
  o.add("train.seed", &train.seed, "seed of every random stream");
  o.add(
      "train.trace",
      &train.trace,
      "FILE: Chrome-trace JSON of every rank's phases per step (open in ui.perfetto.dev)");
  o.add(
      "train.trace_events",
      &train.trace_events,
      "events kept per rank for train.trace (later ones are dropped)",
      OptionSet::positive<int64_t>());
  o.add(
      "train.noise_scale",
      &train.noise_scale,
      "log the gradient noise scale B_simple (McCandlish et al. 2018): the batch size beyond which "
      "larger batches save few steps; needs 2+ ranks, model.sync_bn=false and isif or nce");
  o.add(
      "train.threads",
      &train.threads,
      "LibTorch threads per rank (0 = cores / local ranks)",
      OptionSet::non_negative<int>());
  o.add(
      "train.log_every",
      &train.log_every,
      "steps between metrics lines",
      OptionSet::positive<int64_t>());
  o.add(
      "train.checkpoint_every",
      &train.checkpoint_every,
      "steps between checkpoints (0 = every epoch)",
      OptionSet::non_negative<int64_t>());
  o.add("train.keep", &train.keep, "complete checkpoints kept", OptionSet::positive<int64_t>());
  o.add(
      "train.resume",
      &train.resume,
      "auto (newest complete checkpoint of --out), none, or a checkpoint folder");
  o.add_choice("train.device", &train.device, {"auto", "cpu", "cuda"}, "training device");
  o.add_choice(
      "train.precision",
      &train.precision,
      {"float32", "float64"},
      "float64: slow, for equivalence checks");

  o.add(
      "isif.temperature",
      &method.isif.temperature,
      "softmax temperature T",
      OptionSet::positive<double>());
  o.add(
      "isif.key_grad",
      &method.isif.key_grad,
      "also differentiate through the keys (the seed detaches them)");
  add_rotation_options(o, "isif", method.isif_rotation, "on the first views (0 = none, the seed)");

  o.add(
      "nce.k",
      &method.nce.k,
      "negatives per instance (0 = full softmax over the memory bank)",
      OptionSet::non_negative<int64_t>());
  o.add(
      "nce.temperature",
      &method.nce.temperature,
      "temperature T of exp(<f, v> / T), >= 0.005",
      OptionSet::positive<double>());
  o.add(
      "nce.z_momentum",
      &method.nce.z_momentum,
      "0: Z from the first step, kept (the seed); m > 0: Z <- m Z + (1 - m) Z_step every step",
      OptionSet::non_negative<double>());
  o.add(
      "nce.momentum",
      &method.nce.momentum,
      "memory-bank update v <- normalize(m v + (1 - m) f), m in [0, 1)",
      OptionSet::non_negative<double>());

  o.add(
      "pseudo.clusters",
      &method.pseudo.clusters,
      "udml, margin with labels=kmeans: k-means clusters (pseudo-classes)",
      OptionSet::positive<int64_t>());
  o.add(
      "pseudo.recluster_every",
      &method.pseudo.recluster_every,
      "epochs between re-clusterings, each warm-started from the last centroids",
      OptionSet::positive<int64_t>());
  o.add(
      "pseudo.kmeans_n_init",
      &method.pseudo.kmeans_n_init,
      "k-means restarts of the first clustering",
      OptionSet::positive<int64_t>());
  o.add_choice(
      "pseudo.layer",
      &method.pseudo.layer,
      models::layer_names(),
      "features clustered: head (the L2-normalised embedding) or backbone (the pooled features "
      "below the head, L2-normalised)");
  o.add(
      "udml.items_per_class",
      &method.udml.items_per_class,
      "images per cluster in a batch (batch = train.batch_size / this clusters x this)",
      OptionSet::positive<int64_t>());
  o.add_choice(
      "udml.loss",
      &method.udml.loss,
      {"ms", "contrastive"},
      "pair loss on the pseudo-labels: ms (multi-similarity, the seed) or contrastive");
  o.add("udml.pos_scale", &method.udml.ms.pos_scale, "ms: positive scale (the seed's --beta)");
  o.add("udml.neg_scale", &method.udml.ms.neg_scale, "ms: negative scale (the seed's --alpha)");
  o.add("udml.lambda", &method.udml.ms.lambda, "ms: similarity base lambda");
  o.add("udml.mining_margin", &method.udml.ms.mining_margin, "ms: pair-mining margin epsilon");
  o.add(
      "udml.contrastive_margin",
      &method.udml.contrastive.margin,
      "contrastive: negatives are pushed below this cosine similarity");
  add_rotation_options(o, "udml", method.udml.rotation, "(0 = no rotation head)");
  o.add(
      "udml.instance_weight",
      &method.udml.instance_weight,
      "weight of ISIF's instance loss (isif.temperature) on a second view of every batch image, "
      "added to the pair loss (0 = the seed: one view, no instance term)",
      OptionSet::non_negative<double>());

  o.add_choice(
      "margin.labels",
      &method.margin.labels,
      {"dataset", "kmeans"},
      "dataset (supervised, the seed) or kmeans (pseudo-labels, pseudo.*)");
  o.add(
      "margin.items_per_class",
      &method.margin.items_per_class,
      "images per class in a batch (the seed's batch_k)",
      OptionSet::positive<int64_t>());
  o.add("margin.margin", &method.margin.loss.margin, "margin alpha");
  o.add("margin.beta_init", &method.margin.loss.beta_init, "initial boundary beta");
  o.add(
      "margin.beta_lr",
      &method.margin.beta_lr,
      "beta's own SGD (momentum 0.9) base learning rate, shaped by train.schedule; the seed's "
      "0.1 / its batch of 70");
  o.add("margin.per_class_beta", &method.margin.loss.per_class_beta, "one beta per class");
  o.add("margin.nu", &method.margin.loss.nu, "weight of the beta regulariser");
  o.add("margin.cutoff", &method.margin.loss.cutoff, "sampling distances clipped below here");
  o.add(
      "margin.nonzero_loss_cutoff",
      &method.margin.loss.nonzero_loss_cutoff,
      "negatives at or beyond this distance are never drawn");

  o.add(
      "eval.every",
      &eval.every,
      "kNN evaluation every N epochs (0 = never)",
      OptionSet::non_negative<int64_t>());
  o.add_choice(
      "eval.features",
      &eval.features,
      {"recompute", "bank", "pixels"},
      "kNN training features: recompute (eval transform) or bank (nce's memory bank as is); "
      "pixels evaluates the centred, L2-normalised pixels instead of the model (the baseline)");
  o.add_choice(
      "eval.layer",
      &eval.layer,
      models::layer_names(),
      "features evaluated: head (the L2-normalised embedding) or backbone (the pooled features "
      "below the head, L2-normalised)");
  o.add(
      "eval.protocol",
      &eval.protocol,
      "comma-separated: knn (test vs gallery), recall (Recall@K within the test set), nmi "
      "(k-means of the test set)");
  o.add("eval.recall_k", &eval.recall_k, "recall: the K of Recall@K");
  o.add(
      "eval.gallery",
      &eval.gallery,
      "kNN gallery dataset (default: the training set, e.g. STL-10's labelled split instead)");
  o.add("eval.knn_k", &eval.knn.k, "neighbours K", OptionSet::positive<int64_t>());
  o.add("eval.knn_tau", &eval.knn.tau, "vote weight exp(s / tau)", OptionSet::positive<double>());
  o.add(
      "eval.batch_size",
      &eval.batch_size,
      "images per forward pass when embedding",
      OptionSet::positive<int64_t>());
}

void Config::declare_comm(OptionSet& o) {
  o.add_choice(
      "comm.backend",
      &comm.backend,
      {"auto", "mpi", "nccl", "local"},
      "collectives: auto = nccl on GPUs, mpi on CPUs, local alone");
  o.add("comm.timeout_s", &comm.timeout_s, "a collective taking longer ends the job (<= 0: never)");
  o.add(
      "comm.stop_timeout_s",
      &comm.stop_timeout_s,
      "after a stop signal (SIGTERM, SIGUSR1), a collective taking longer ends the job with exit "
      "status 4 (<= 0: only comm.timeout_s); keep it under the scheduler's KillWait");
  o.add(
      "comm.check_order",
      &comm.check_order,
      "debug: compare every collective across ranks before it runs (one extra exchange each; "
      "nothing to compare with one rank)");
  o.add(
      "comm.bucket_mb",
      &comm.bucket_mb,
      "gradient bucket size (MB)",
      OptionSet::positive<double>());
  o.add(
      "comm.first_bucket_mb",
      &comm.first_bucket_mb,
      "first gradient bucket size (MB)",
      OptionSet::positive<double>());
}

void Config::declare_bench(OptionSet& o) {
  o.add_choice("bench.device", &bench.device, {"auto", "cpu", "cuda"}, "bench comm: tensor device");
  o.add(
      "bench.min_bytes",
      &bench.min_bytes,
      "bench comm: smallest message",
      OptionSet::positive<int64_t>());
  o.add(
      "bench.max_bytes",
      &bench.max_bytes,
      "bench comm: largest message",
      OptionSet::positive<int64_t>());
  o.add("bench.steps", &bench.steps, "timed steps", OptionSet::positive<int64_t>());
  o.add("bench.warmup", &bench.warmup, "untimed steps first", OptionSet::non_negative<int64_t>());
  o.add(
      "bench.ops",
      &bench.ops,
      "bench step: list the N operators with the most self time per step (0 = no profile)",
      OptionSet::non_negative<int64_t>());
  o.add("bench.bank_rows", &bench.bank_rows, "bench bank: memory-bank sizes N");
  o.add("bench.bank_k", &bench.bank_k, "bench bank: negatives K (0 = full softmax)");
  o.add("bench.kmeans_rows", &bench.kmeans_rows, "bench kmeans: rows N (dimension: model.low_dim)");
  o.add("bench.kmeans_k", &bench.kmeans_k, "bench kmeans: clusters K");
}

void Config::validate() const {
  aug.validate(/*channels=*/0);
  UEL_CHECK_CONFIG(
      comm.backend != "nccl" || train.device != "cpu",
      "--comm.backend=nccl runs on GPUs but --train.device=cpu; use --comm.backend=mpi (or auto) "
      "for CPU training");
  UEL_CHECK_CONFIG(
      bench.min_bytes <= bench.max_bytes,
      "--bench.min_bytes {} exceeds --bench.max_bytes {}",
      bench.min_bytes,
      bench.max_bytes);
  for (const double n : bench.bank_rows) {
    UEL_CHECK_CONFIG(
        n >= 1 && n == std::floor(n), "--bench.bank_rows: {} is not a positive whole number", n);
  }
  for (const auto* values : {&bench.kmeans_rows, &bench.kmeans_k}) {
    for (const double v : *values) {
      UEL_CHECK_CONFIG(
          v >= 1 && v == std::floor(v),
          "--bench.kmeans_rows/_k: {} is not a positive whole number",
          v);
    }
  }
  for (const double k : bench.bank_k) {
    UEL_CHECK_CONFIG(
        k >= 0 && k == std::floor(k), "--bench.bank_k: {} is not a whole number >= 0", k);
  }
}

}  // namespace uel::cli
