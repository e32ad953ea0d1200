#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/data/pipeline.h"

namespace uel::data {
namespace {

// 37 images of 6x6x3 whose pixels encode their index, labels i % 4.
std::string make_dataset(const test::ScratchDir& dir) {
  const std::string path = dir.file("toy.h5");
  DatasetWriter w(path, 6, 6, 3, "toy", {"a", "b", "c", "d"});
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < 37; ++i)
    labels.push_back(i % 4);
  w.append(
      at::arange(37, at::kInt)
          .mul(5)
          .to(at::kByte)
          .view({37, 1, 1, 1})
          .expand({37, 6, 6, 3})
          .contiguous(),
      labels);
  w.commit();
  return path;
}

DataConfig data_config(const std::string& path) {
  DataConfig c;
  c.train = path;
  return c;
}

TEST(Loader, BatchesHaveViewsIndicesAndLabels) {
  test::ScratchDir dir;
  AugmentConfig aug;
  aug.rotation = true;
  TrainData data = open_train_data(data_config(make_dataset(dir)), aug, 8, 1, 0, 1, c10::kCPU);
  EXPECT_EQ(data.loader->steps_per_epoch(), 4);  // 37 // 8, last partial batch dropped
  data.loader->start_epoch(0);
  int steps = 0;
  std::vector<int64_t> seen;
  while (auto batch = data.loader->next()) {
    EXPECT_EQ(batch->step, steps++);
    ASSERT_EQ(batch->views.size(), 2u);
    EXPECT_EQ(batch->views[0].sizes(), (std::vector<int64_t>{8, 3, 6, 6}));
    ASSERT_EQ(batch->rotation_labels.size(), 2u);
    for (int64_t k = 0; k < 8; ++k) {
      const int64_t index = batch->indices[k].item<int64_t>();
      EXPECT_EQ(batch->labels[k].item<int64_t>(), index % 4);
      seen.push_back(index);
    }
  }
  EXPECT_EQ(steps, 4);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end());
  // Normalisation statistics were measured on the data: every image is a constant 5*i.
  EXPECT_NEAR(data.augmenter->config().mean[0], 5.0 * 18 / 255, 1e-6);
}

TEST(Loader, PadsTheLastBatchWhenAsked) {
  test::ScratchDir dir;
  DataConfig config = data_config(make_dataset(dir));
  config.drop_last = false;
  TrainData data = open_train_data(config, AugmentConfig{}, 8, 1, 0, 1, c10::kCPU);
  EXPECT_EQ(data.loader->steps_per_epoch(), 5);  // ceil(37 / 8)
  data.loader->start_epoch(0);
  std::set<int64_t> seen;
  while (auto batch = data.loader->next()) {
    EXPECT_EQ(batch->indices.size(0), 8);
    for (int64_t k = 0; k < 8; ++k)
      seen.insert(batch->indices[k].item<int64_t>());
  }
  EXPECT_EQ(seen.size(), 37u);  // every item, three of them twice
}

TEST(Loader, ValidationSplitIsDisjointFixedAndComplete) {
  test::ScratchDir dir;
  DataConfig config = data_config(make_dataset(dir));
  config.val_fraction = 0.25;
  AugmentConfig aug;
  TrainData a = open_train_data(config, aug, 4, /*seed=*/1, 0, 1, c10::kCPU);
  TrainData b = open_train_data(config, aug, 4, /*seed=*/2, 0, 1, c10::kCPU);
  EXPECT_EQ(a.validation.size(), 9u);  // round(0.25 * 37)
  EXPECT_EQ(a.positions.size(), 28u);
  EXPECT_EQ(a.validation, b.validation);  // independent of train.seed
  std::set<int64_t> all(a.positions.begin(), a.positions.end());
  all.insert(a.validation.begin(), a.validation.end());
  EXPECT_EQ(all.size(), 37u);
  config.val_fraction = 0.99;  // round(0.99 * 37) = 37 held out
  EXPECT_THROW_WITH(
      open_train_data(config, aug, 4, 1, 0, 1, c10::kCPU),
      ConfigError,
      "--data.val_fraction 0.99 holds out all 37 training images");
}

TEST(Loader, RanksSplitTheSameViewsAsOneRank) {
  test::ScratchDir dir;
  const std::string path = make_dataset(dir);
  AugmentConfig aug;
  aug.mean = {0.5};
  aug.std = {0.25};
  TrainData one = open_train_data(data_config(path), aug, 8, 3, 0, 1, c10::kCPU);
  TrainData r0 = open_train_data(data_config(path), aug, 8, 3, 0, 2, c10::kCPU);
  TrainData r1 = open_train_data(data_config(path), aug, 8, 3, 1, 2, c10::kCPU);
  for (auto* d : {&one, &r0, &r1})
    d->loader->start_epoch(2);
  for (int step = 0; step < 4; ++step) {
    auto a = one.loader->next(), b = r0.loader->next(), c = r1.loader->next();
    ASSERT_TRUE(a && b && c);
    for (int v = 0; v < 2; ++v) {
      EXPECT_TRUE(at::equal(a->views[v], at::cat({b->views[v], c->views[v]})));
    }
    EXPECT_TRUE(at::equal(a->indices, at::cat({b->indices, c->indices})));
  }
}

TEST(Loader, ResumesMidEpochAndRepeatsExactly) {
  test::ScratchDir dir;
  const std::string path = make_dataset(dir);
  AugmentConfig aug;
  aug.mean = {0.5};
  aug.std = {0.25};
  DataConfig config = data_config(path);
  config.workers = 3;
  TrainData a = open_train_data(config, aug, 4, 9, 0, 1, c10::kCPU);
  TrainData b = open_train_data(config, aug, 4, 9, 0, 1, c10::kCPU);
  a.loader->start_epoch(1);
  b.loader->start_epoch(1, /*first_step=*/5);
  for (int i = 0; i < 5; ++i)
    a.loader->next();
  while (auto x = a.loader->next()) {
    auto y = b.loader->next();
    ASSERT_TRUE(y);
    EXPECT_EQ(x->step, y->step);
    EXPECT_TRUE(at::equal(x->views[1], y->views[1]));
  }
  EXPECT_FALSE(b.loader->next());
}

TEST(Loader, ClassFilterAndBadOptions) {
  test::ScratchDir dir;
  const std::string path = make_dataset(dir);
  AugmentConfig aug;
  DataConfig config = data_config(path);
  config.classes = "1-2";
  TrainData d = open_train_data(config, aug, 4, 0, 0, 1, c10::kCPU);
  EXPECT_EQ(d.positions.size(), 18u);  // labels 1 and 2 of i % 4 over 37 items
  d.loader->start_epoch(0);
  while (auto batch = d.loader->next()) {
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t label = batch->labels[k].item<int64_t>();
      EXPECT_TRUE(label == 1 || label == 2);
    }
  }
  config.classes = "7";
  EXPECT_THROW_WITH(
      open_train_data(config, aug, 4, 0, 0, 1, c10::kCPU),
      ConfigError,
      "outside the dataset's classes 0-3");
  EXPECT_THROW_WITH(
      open_train_data(data_config(path), aug, 6, 0, 0, 4, c10::kCPU),
      ConfigError,
      "not divisible by the world size 4");
  EXPECT_THROW_WITH(
      open_train_data(DataConfig{}, aug, 4, 0, 0, 1, c10::kCPU),
      ConfigError,
      "--data.train is not set");
}

}  // namespace
}  // namespace uel::data
