#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/train/checkpoint.h"
#include "uel/train/noise_scale.h"
#include "uel/train/optimizer.h"
#include "uel/train/schedule.h"

namespace uel::train {
namespace {

namespace fs = std::filesystem;

// E ||g_b||^2 = |G|^2 + tr(Sigma) / b with |G|^2 = 0.5, tr(Sigma) = 50: B_simple = 100.
TEST(NoiseScale, RecoversBothTermsFromTwoBatchSizes) {
  const auto sq = [](double b) { return 0.5 + 50 / b; };
  for (const auto& [small, big] : {std::pair{64.0, 128.0}, {32.0, 128.0}, {1024.0, 4096.0}}) {
    const NoiseScale noise = gradient_noise_scale(sq(small), sq(big), small, big);
    EXPECT_NEAR(noise.gradient_sq, 0.5, 1e-12);
    EXPECT_NEAR(noise.trace, 50, 1e-9);
    ASSERT_TRUE(noise.b_simple.has_value());
    EXPECT_NEAR(*noise.b_simple, 100, 1e-9);
  }
  // The larger batch's norm above what |G|^2 >= 0 allows: no estimate, not a negative one.
  EXPECT_FALSE(gradient_noise_scale(1.0, 0.4, 64, 128).b_simple.has_value());
  EXPECT_THROW(gradient_noise_scale(1.0, 0.9, 128, 128), Error);
}

TEST(Schedule, StepIsTheSeedsPostFixSchedule) {
  ScheduleConfig c;  // 0.03, milestones 120/160/200 -> 0.1/0.05/0.01
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 200, 128), 0.03);
  EXPECT_DOUBLE_EQ(learning_rate(c, 119.99, 200, 128), 0.03);
  EXPECT_DOUBLE_EQ(learning_rate(c, 120, 200, 128), 0.003);
  EXPECT_DOUBLE_EQ(learning_rate(c, 160.5, 200, 128), 0.0015);
  EXPECT_DOUBLE_EQ(learning_rate(c, 250, 200, 128), 0.0003);
}

TEST(Schedule, CosineWarmupAndBatchScaling) {
  ScheduleConfig c;
  c.schedule = "cosine";
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 10, 128), 0.03);
  EXPECT_NEAR(learning_rate(c, 5, 10, 128), 0.015, 1e-12);
  EXPECT_NEAR(learning_rate(c, 10, 10, 128), 0.0, 1e-12);
  c.schedule = "constant";
  c.warmup_epochs = 2;
  EXPECT_NEAR(learning_rate(c, 0, 200, 128), 0.0003, 1e-12);
  EXPECT_NEAR(learning_rate(c, 1, 200, 128), 0.03 * (0.01 + 0.99 * 0.5), 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(c, 2, 200, 128), 0.03);
  c.lr_scaling = "linear";
  EXPECT_DOUBLE_EQ(learning_rate(c, 3, 200, 1024), 0.03 * 4);
  c.lr_scaling = "sqrt";
  EXPECT_DOUBLE_EQ(learning_rate(c, 3, 200, 1024), 0.03 * 2);
  EXPECT_DOUBLE_EQ(learning_rate(c, 3, 200, 4096), 0.03 * 4);
}

// Plain SGD (no momentum, no decay) moves w by -lr g: the network group at the scheduled lr, a
// group with lr_scale 2 at twice it, a group with its own base lr 0.01 (base 0.1) at a tenth of
// it, so a schedule that halves lr halves all three (the margin seed decays beta with the net).
TEST(Optimizer, GroupsFollowTheScheduleByScaleOrOwnBaseRate) {
  OptimizerConfig config;
  config.momentum = 0;
  config.weight_decay = 0;
  std::vector<at::Tensor> w;
  for (int i = 0; i < 3; ++i)
    w.push_back(torch::zeros({2}, torch::kDouble).requires_grad_(true));
  std::vector<OptimizerGroup> groups(3);
  groups[0].params = {w[0]};
  groups[1].params = {w[1]};
  groups[1].lr_scale = 2;
  groups[2].params = {w[2]};
  groups[2].optimizer = "sgd";
  groups[2].momentum = 0;
  groups[2].own_lr = 0.01;
  Optimizer optimizer(config, 0.1, std::move(groups));
  const at::Tensor g = torch::tensor({1.0, -3.0}, torch::kDouble);
  for (const double lr : {0.1, 0.05}) {
    optimizer.zero_grad();
    for (const at::Tensor& p : w)
      (p * g).sum().backward();
    optimizer.set_lr(lr);
    optimizer.step();
  }
  EXPECT_TRUE(torch::allclose(w[0], -0.15 * g, 0, 1e-15)) << w[0];
  EXPECT_TRUE(torch::allclose(w[1], -0.30 * g, 0, 1e-15)) << w[1];
  EXPECT_TRUE(torch::allclose(w[2], -0.015 * g, 0, 1e-15)) << w[2];
}

// LARS against the paper's update written out (You et al. 2017, Algorithm 1): a weight
// w = (3, 4) with gradient g = (6, -8), eta 0.001, weight decay 0.5, lr 2, momentum 0.9. Step 1:
// trust = 0.001 x 5 / (10 + 0.5 x 5) = 0.0004, v = 2 x 0.0004 x (g + 0.5 w) = (0.006, -0.0048).
// Step 2 (trust 0.000400015737...) from a Python transcription of the algorithm. A 1-D
// parameter (a bias) takes the plain momentum step without decay: (1, -2) -> (0, -3) -> (-1.9,
// -4.9) for the gradient 0.5.
TEST(Optimizer, LarsTakesThePapersTrustRatioStep) {
  OptimizerConfig config;
  config.name = "lars";
  config.momentum = 0.9;
  config.lars_eta = 0.001;
  at::Tensor w = torch::tensor({3.0, 4.0}, torch::kDouble).reshape({2, 1}).requires_grad_(true);
  at::Tensor b = torch::tensor({1.0, -2.0}, torch::kDouble).requires_grad_(true);
  std::vector<OptimizerGroup> groups(1);
  groups[0].params = {w, b};
  groups[0].weight_decay = 0.5;
  Optimizer optimizer(config, 2.0, std::move(groups));
  const at::Tensor g = torch::tensor({6.0, -8.0}, torch::kDouble).reshape({2, 1});
  const std::vector<std::pair<std::vector<double>, std::vector<double>>> expected = {
      {{2.994, 4.0048}, {0.0, -3.0}}, {{2.9826021640347107, 4.013918268772232}, {-1.9, -4.9}}};
  for (const auto& [w_after, b_after] : expected) {
    optimizer.zero_grad();
    ((w * g).sum() + 0.5 * b.sum()).backward();
    optimizer.step();
    EXPECT_TRUE(torch::allclose(w.flatten(), torch::tensor(w_after, torch::kDouble), 0, 1e-14))
        << w;
    EXPECT_TRUE(torch::allclose(b, torch::tensor(b_after, torch::kDouble), 0, 1e-14)) << b;
  }
}

// A GPU run's optimizer state (tagged cuda:0) resumes onto the parameters' device, here the CPU,
// for one torch optimizer and for several (a group with its own kind), and steps as the saved
// optimizer would have.
TEST(Optimizer, StateSavedOnAGpuResumesOnTheParametersDevice) {
  test::ScratchDir dir;
  OptimizerConfig config;
  config.name = "adamw";
  for (const bool two_kinds : {false, true}) {
    auto params = [] {
      return std::vector<at::Tensor>{
          torch::tensor({1.0, -2.0}, torch::kDouble).requires_grad_(true),
          torch::tensor({0.5}, torch::kDouble).requires_grad_(true)};
    };
    auto groups = [&](const std::vector<at::Tensor>& p) {
      std::vector<OptimizerGroup> g(2);
      g[0].params = {p[0]};
      g[1].params = {p[1]};
      g[1].optimizer = two_kinds ? "sgd" : "";
      return g;
    };
    auto step = [](Optimizer& optimizer, const std::vector<at::Tensor>& p) {
      optimizer.zero_grad();
      (p[0].pow(2).sum() + 3 * p[1].sum()).backward();
      optimizer.step();
    };
    const std::vector<at::Tensor> saved = params(), resumed = params();
    Optimizer first(config, 0.1, groups(saved));
    step(first, saved);
    step(first, saved);
    first.save(dir.file("optim.pt"));
    test::retag_archive_device(dir.file("optim.pt"), dir.file("gpu.pt"), "cuda:0");
    if (!torch::cuda::is_available()) {
      torch::serialize::InputArchive archive;
      EXPECT_ANY_THROW(archive.load_from(dir.file("gpu.pt")));
    }
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < saved.size(); ++i)
        resumed[i].copy_(saved[i]);
    }
    Optimizer second(config, 0.1, groups(resumed));
    second.load(dir.file("gpu.pt"));
    step(first, saved);
    step(second, resumed);
    for (size_t i = 0; i < saved.size(); ++i)
      EXPECT_TRUE(torch::equal(saved[i], resumed[i])) << two_kinds << saved[i] << resumed[i];
  }
}

// A resume names what changed, and stays quiet about options that only split or move a run.
TEST(Checkpoint, ChangedOptionsIgnoreHowTheRunIsExecuted) {
  const std::string saved =
      "[data]\nworkers = 1\n[train]\nlr = 0.03\nmax_steps = 100\nthreads = 2\nseed = 0\n";
  EXPECT_TRUE(
      changed_options(
          saved, "[data]\nworkers = 4\n[train]\nlr = 0.03\nmax_steps = 0\nthreads = 1\nseed = 0\n")
          .empty());
  EXPECT_EQ(
      changed_options(
          saved,
          "[data]\nworkers = 1\n[train]\nlr = 0.05\nmax_steps = 100\nthreads = 2\nseed = "
          "0\nwarmup_epochs = 5\n"),
      (std::vector<std::string>{"train.lr 0.03 -> 0.05", "train.warmup_epochs (unset) -> 5"}));
}

TEST(Schedule, ValidationNamesTheOption) {
  ScheduleConfig c;
  c.factors = {0.1};
  EXPECT_THROW_WITH(validate(c), ConfigError, "--train.milestone_factors has 1");
  c = ScheduleConfig{};
  c.milestones = {10, 5, 20};
  EXPECT_THROW_WITH(validate(c), ConfigError, "--train.milestones must increase");
  c = ScheduleConfig{};
  c.schedule = "poly";
  EXPECT_THROW_WITH(validate(c), ConfigError, "not one of step|cosine|constant");
}

TEST(Checkpoint, OnlyCompleteOnesCountAndPruningKeepsTheNewest) {
  test::ScratchDir run;
  const std::string r = run.path().string();
  EXPECT_FALSE(latest_checkpoint(r).has_value());
  for (int64_t step : {10, 20, 30, 40}) {
    fs::create_directories(checkpoint_dir(r, step));
    CheckpointState s;
    s.global_step = step;
    s.epoch = step / 10;
    s.config_hash = "abc";
    s.git_sha = "deadbeef";
    write_state(checkpoint_dir(r, step), s);
    if (step != 40)
      mark_done(checkpoint_dir(r, step));  // step 40 is still being written
  }
  EXPECT_EQ(latest_checkpoint(r), checkpoint_dir(r, 30));
  const CheckpointState s = read_state(checkpoint_dir(r, 30));
  EXPECT_EQ(s.global_step, 30);
  EXPECT_EQ(s.epoch, 3);
  EXPECT_EQ(s.git_sha, "deadbeef");
  prune_checkpoints(r, 2);
  EXPECT_FALSE(fs::exists(checkpoint_dir(r, 10)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(r, 20)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(r, 30)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(r, 40)));  // newer than the kept ones: left alone
  // At start-up nothing is being written: what a killed job left goes, down to `keep`.
  fs::create_directories(checkpoint_dir(r, 5));  // a partial folder older than the kept ones
  mark_done(checkpoint_dir(r, 40));
  fs::create_directories(checkpoint_dir(r, 50));
  prune_checkpoints(r, 2, /*idle=*/true);
  for (int64_t step : {5, 20, 50})
    EXPECT_FALSE(fs::exists(checkpoint_dir(r, step))) << step;
  EXPECT_TRUE(fs::exists(checkpoint_dir(r, 30)) && fs::exists(checkpoint_dir(r, 40)));
  std::ofstream(fs::path(checkpoint_dir(r, 30)) / "state.json") << "{\"epoch\": 1}";
  EXPECT_THROW_WITH(read_state(checkpoint_dir(r, 30)), DataError, "lacks \"step_in_epoch\"");
}

}  // namespace
}  // namespace uel::train
