#include "uel/train/config.h"

#include <cmath>

#include "uel/core/error.h"

namespace uel::train {

void validate(const RunConfig& c) {
  methods::validate(c.method);
  UEL_CHECK_CONFIG(
      c.eval.features != "bank" || methods::keeps_train_features(c.method),
      "--eval.features=bank needs the memory bank of a method that keeps one; --train.method={} "
      "keeps none. Use recompute",
      c.method.name);
  // The noise scale reads each rank's gradient as an independent draw at batch / ranks.
  UEL_CHECK_CONFIG(
      !c.train.noise_scale || !c.model.sync_bn,
      "--train.noise_scale needs --model.sync_bn=false: SyncBatchNorm's shared batch statistics "
      "carry every rank's samples into each rank's gradient (their sum cancels what the "
      "normalisation removes), which biases the estimate down to negative |G|^2");
  const std::string crossing = methods::cross_rank_gradients(c.method);
  UEL_CHECK_CONFIG(
      !c.train.noise_scale || crossing.empty(),
      "--train.noise_scale needs each rank's gradient to come from its own samples; the loss of "
      "{} backpropagates into other ranks' samples. Measure it with isif or nce",
      crossing);
  UEL_CHECK_CONFIG(c.train.epochs > 0, "--train.epochs must be positive, got {}", c.train.epochs);
  UEL_CHECK_CONFIG(c.train.max_steps >= 0, "--train.max_steps must be >= 0");
  UEL_CHECK_CONFIG(c.train.log_every > 0, "--train.log_every must be positive");
  UEL_CHECK_CONFIG(c.train.checkpoint_every >= 0, "--train.checkpoint_every must be >= 0");
  UEL_CHECK_CONFIG(c.train.keep >= 1, "--train.keep must be >= 1");
  UEL_CHECK_CONFIG(c.eval.every >= 0, "--eval.every must be >= 0");
  UEL_CHECK_CONFIG(
      c.eval.every == 0 || !c.data.test.empty() || c.data.val_fraction > 0,
      "--eval.every needs --data.test or --data.val_fraction");
  const eval::Protocols protocols = eval::parse_protocols(c.eval.protocol);
  for (const double k : c.eval.recall_k) {
    UEL_CHECK_CONFIG(
        k >= 1 && k == std::floor(k), "--eval.recall_k: {} is not a positive whole number", k);
  }
  UEL_CHECK_CONFIG(
      !protocols.recall || !c.eval.recall_k.empty(), "--eval.recall_k needs at least one K");
  UEL_CHECK_CONFIG(
      c.eval.gallery.empty() || c.eval.features != "bank",
      "--eval.gallery replaces the training set as kNN gallery, so --eval.features=bank (features "
      "of the training set) cannot serve it; use recompute");
  UEL_CHECK_CONFIG(
      c.data.test_classes.empty() || c.data.val_fraction == 0,
      "--data.test_classes selects classes of --data.test; a validation split "
      "(--data.val_fraction) holds out the training classes. Use one or the other");
  UEL_CHECK_CONFIG(
      c.train.accumulate == 1 || methods::sums_over_samples(c.method),
      "--train.accumulate={} needs a loss that is a mean over samples (nce); the loss of "
      "--train.method={} spans the batch it sees, so micro-batches would change the objective. "
      "Use more ranks for a larger batch, or --train.accumulate=1",
      c.train.accumulate,
      c.method.name);
  UEL_CHECK_CONFIG(
      c.train.batch_size % c.train.accumulate == 0,
      "--train.batch_size {} is not divisible by --train.accumulate {}",
      c.train.batch_size,
      c.train.accumulate);
  validate(c.train.schedule);
  validate(c.train.optimizer);
}

}  // namespace uel::train
