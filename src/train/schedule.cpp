#include "uel/train/schedule.h"

#include <cmath>

#include "uel/core/error.h"

namespace uel::train {

void validate(const ScheduleConfig& c) {
  UEL_CHECK_CONFIG(c.lr > 0, "--train.lr must be positive, got {}", c.lr);
  UEL_CHECK_CONFIG(
      c.schedule == "step" || c.schedule == "cosine" || c.schedule == "constant",
      "--train.schedule='{}' is not one of step|cosine|constant",
      c.schedule);
  UEL_CHECK_CONFIG(
      c.milestones.size() == c.factors.size(),
      "--train.milestones has {} entries but --train.milestone_factors has {}",
      c.milestones.size(),
      c.factors.size());
  for (size_t i = 1; i < c.milestones.size(); ++i) {
    UEL_CHECK_CONFIG(c.milestones[i] > c.milestones[i - 1], "--train.milestones must increase");
  }
  UEL_CHECK_CONFIG(c.warmup_epochs >= 0, "--train.warmup_epochs must be >= 0");
  UEL_CHECK_CONFIG(
      c.lr_scaling == "none" || c.lr_scaling == "linear" || c.lr_scaling == "sqrt",
      "--train.lr_scaling='{}' is not one of none|linear|sqrt",
      c.lr_scaling);
}

double learning_rate(
    const ScheduleConfig& c, double epoch, int64_t total_epochs, int64_t global_batch) {
  const double batch_ratio = global_batch / 256.0;
  double lr = c.lr_scaling == "linear" ? c.lr * batch_ratio
              : c.lr_scaling == "sqrt" ? c.lr * std::sqrt(batch_ratio)
                                       : c.lr;
  if (c.schedule == "step") {
    double factor = 1;
    for (size_t i = 0; i < c.milestones.size(); ++i) {
      if (std::floor(epoch) >= c.milestones[i])
        factor = c.factors[i];
    }
    lr *= factor;
  } else if (c.schedule == "cosine") {
    const double progress = std::min(1.0, epoch / std::max<double>(1, total_epochs));
    lr *= 0.5 * (1 + std::cos(M_PI * progress));
  }
  if (epoch < c.warmup_epochs) {
    const double ramp = epoch / c.warmup_epochs;
    lr *= 0.01 + 0.99 * ramp;
  }
  return lr;
}

}  // namespace uel::train
