#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/data/sampler.h"

namespace uel::data {
namespace {

// The union of all ranks' local batches, in rank order.
std::vector<int64_t> gather_ranks(
    int64_t n, int64_t batch, int world, int64_t epoch, int64_t step, TailPolicy tail) {
  std::vector<int64_t> global;
  for (int r = 0; r < world; ++r) {
    DistributedSampler s(n, batch, r, world, /*seed=*/3, true, tail);
    auto part = s.local_batch(s.epoch_order(epoch), step);
    EXPECT_EQ(static_cast<int64_t>(part.size()), batch / world);
    global.insert(global.end(), part.begin(), part.end());
  }
  return global;
}

TEST(DistributedSampler, GlobalBatchIsTheSameForAnyWorldSize) {
  const int64_t n = 103, batch = 8;
  for (TailPolicy tail : {TailPolicy::kDrop, TailPolicy::kPad}) {
    DistributedSampler one(n, batch, 0, 1, 3, true, tail);
    for (int64_t epoch : {0, 1}) {
      for (int64_t step = 0; step < one.steps_per_epoch(); ++step) {
        const auto reference = gather_ranks(n, batch, 1, epoch, step, tail);
        EXPECT_EQ(gather_ranks(n, batch, 2, epoch, step, tail), reference);
        EXPECT_EQ(gather_ranks(n, batch, 4, epoch, step, tail), reference);
      }
    }
  }
}

TEST(DistributedSampler, EpochIsAPermutationAndDropsOrPadsTheTail) {
  const int64_t n = 103, batch = 8;
  DistributedSampler drop(n, batch, 0, 1, 3, true, TailPolicy::kDrop);
  EXPECT_EQ(drop.steps_per_epoch(), 12);
  auto order = drop.epoch_order(0);
  ASSERT_EQ(order.size(), 96u);
  EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 96u);  // no repeats

  DistributedSampler pad(n, batch, 0, 1, 3, true, TailPolicy::kPad);
  EXPECT_EQ(pad.steps_per_epoch(), 13);
  auto padded = pad.epoch_order(0);
  ASSERT_EQ(padded.size(), 104u);
  EXPECT_EQ(std::set<int64_t>(padded.begin(), padded.begin() + n).size(), static_cast<size_t>(n));
  EXPECT_EQ(padded[103], padded[0]);  // the tail wraps to the start of the order
}

TEST(DistributedSampler, OrderDependsOnSeedAndEpochOnly) {
  DistributedSampler a(50, 10, 0, 1, 1), b(50, 10, 0, 1, 1), c(50, 10, 0, 1, 2);
  EXPECT_EQ(a.epoch_order(4), b.epoch_order(4));
  EXPECT_NE(a.epoch_order(4), a.epoch_order(5));
  EXPECT_NE(a.epoch_order(4), c.epoch_order(4));
  DistributedSampler ordered(50, 10, 0, 1, 1, /*shuffle=*/false);
  auto o = ordered.epoch_order(0);
  for (int64_t i = 0; i < 50; ++i)
    EXPECT_EQ(o[i], i);
}

TEST(DistributedSampler, RejectsBadBatches) {
  EXPECT_THROW_WITH(
      DistributedSampler(100, 10, 0, 4, 0), ConfigError, "not divisible by the world size 4");
  EXPECT_THROW_WITH(DistributedSampler(100, -8, 0, 1, 0), ConfigError, "must be positive");
  EXPECT_THROW_WITH(DistributedSampler(5, 8, 0, 1, 0), ConfigError, "fewer than one global batch");
  EXPECT_THROW(DistributedSampler(0, 8, 0, 1, 0, true, TailPolicy::kPad), DataError);
}

TEST(ClassBalancedSampler, BatchesHoldMClassesTimesKItems) {
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < 200; ++i)
    labels.push_back(i % 10);  // 10 classes x 20
  const int64_t m = 4, k = 5;
  ClassBalancedSampler s(labels, m, k, 0, 1, 9);
  EXPECT_EQ(s.global_batch(), 20);
  EXPECT_EQ(s.steps_per_epoch(), 10);
  auto order = s.epoch_order(0);
  for (int64_t step = 0; step < s.steps_per_epoch(); ++step) {
    std::map<int64_t, std::set<int64_t>> per_class;
    for (int64_t i = 0; i < m * k; ++i) {
      const int64_t item = order[step * m * k + i];
      per_class[labels[item]].insert(item);
      // Items come class by class, k at a time.
      EXPECT_EQ(labels[item], labels[order[step * m * k + (i / k) * k]]);
    }
    ASSERT_EQ(per_class.size(), static_cast<size_t>(m));
    for (auto& [c, items] : per_class)
      EXPECT_EQ(items.size(), static_cast<size_t>(k));
  }
  // The ranks split the same global batches.
  ClassBalancedSampler r0(labels, m, k, 0, 2, 9), r1(labels, m, k, 1, 2, 9);
  auto a = r0.local_batch(r0.epoch_order(0), 3), b = r1.local_batch(r1.epoch_order(0), 3);
  a.insert(a.end(), b.begin(), b.end());
  EXPECT_EQ(a, s.local_batch(order, 3));
}

TEST(ClassBalancedSampler, VisitsEveryItemOfAClassBeforeRepeating) {
  std::vector<int64_t> labels(30, 0);
  for (int64_t i = 15; i < 30; ++i)
    labels[i] = 1;
  ClassBalancedSampler s(labels, 2, 5, 0, 1, 1);  // 3 steps: 15 items of each class
  auto order = s.epoch_order(0);
  EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 30u);
  EXPECT_THROW_WITH(ClassBalancedSampler(labels, 3, 2, 0, 1, 0), ConfigError, "only 2 classes");
}

TEST(ClassFilter, ParsesRangesAndLists) {
  EXPECT_EQ(parse_class_filter("0-4", 10), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(parse_class_filter("7,0,2,5-6", 10), (std::vector<int64_t>{0, 2, 5, 6, 7}));
  EXPECT_EQ(parse_class_filter("all", 3), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_THROW_WITH(
      parse_class_filter("5-12", 10), ConfigError, "outside the dataset's classes 0-9");
  EXPECT_THROW_WITH(parse_class_filter("4-2", 10), ConfigError, "data.classes");
  EXPECT_THROW_WITH(parse_class_filter("a-b", 10), ConfigError, "not a class id or range");
  EXPECT_THROW_WITH(parse_class_filter("1x", 10), ConfigError, "not a class id or range");
}

TEST(ClassFilter, SelectsIndicesOrFailsClearly) {
  const std::vector<int64_t> labels = {0, 3, 1, 3, 2};
  EXPECT_EQ(select_classes(labels, {1, 3}, "x.h5"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_THROW_WITH(select_classes(labels, {4}, "x.h5"), DataError, "selects no image of x.h5");
}

}  // namespace
}  // namespace uel::data
