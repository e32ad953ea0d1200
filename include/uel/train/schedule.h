#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace uel::train {

struct ScheduleConfig {
  double lr = 0.03;
  std::string schedule = "step";  // step | cosine | constant
  // step: from epoch milestones[i] on, lr x factors[i] (the seed: 120/160/200 -> 0.1/0.05/0.01)
  std::vector<double> milestones = {120, 160, 200};
  std::vector<double> factors = {0.1, 0.05, 0.01};
  double warmup_epochs = 0;  // linear ramp from lr / 100 (large-batch runs)
  double epochs = 200;       // cosine decays to 0 at the end
  // none | linear (lr x global batch / 256, Goyal et al.) | sqrt (lr x sqrt(global batch / 256),
  // Krizhevsky's rule, gentler for the largest batches)
  std::string lr_scaling = "none";
};

// Throws ConfigError naming the train.* option at fault.
void validate(const ScheduleConfig& config);

// Learning rate at fractional epoch `epoch` (epoch + step / steps_per_epoch) of a run of
// `total_epochs` (cosine reaches 0 at its end).
double learning_rate(
    const ScheduleConfig& config, double epoch, int64_t total_epochs, int64_t global_batch);

}  // namespace uel::train
