#include <unistd.h>

#include <cmath>
#include <set>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/core/rng.h"
#include "uel/core/shard.h"

namespace uel {
namespace {

TEST(Error, CarriesHintExpressionAndLocation) {
  const int batch = 100;
  try {
    UEL_CHECK_CONFIG(
        batch % 8 == 0, "--train.batch_size {} is not divisible by world size {}", batch, 8);
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("--train.batch_size 100 is not divisible by world size 8", 0), 0u) << what;
    EXPECT_NE(what.find("batch % 8 == 0"), std::string::npos) << what;
    EXPECT_NE(what.find("tests/unit/test_core.cpp:"), std::string::npos) << what;
    EXPECT_EQ(e.exit_code(), 2);
  }
}

TEST(Error, TypedFamilyAndExitCodes) {
  EXPECT_THROW(UEL_CHECK(false, "x"), Error);
  EXPECT_THROW(UEL_CHECK_DATA(false, "x"), DataError);
  EXPECT_EQ(DataError("x").exit_code(), 3);
  EXPECT_EQ(Error("x").exit_code(), 1);
  // Every typed error is caught as the family's base.
  EXPECT_THROW(UEL_CHECK_DATA(false, "x"), Error);
}

TEST(ShardRange, UnevenSizesPartitionContiguously) {
  for (int64_t n : {0, 1, 5, 7, 10, 1000, 1001}) {
    for (int world : {1, 2, 3, 4, 8}) {
      int64_t expected_begin = 0;
      for (int r = 0; r < world; ++r) {
        const ShardRange s = shard_range(n, r, world);
        EXPECT_EQ(s.begin, expected_begin) << n << " " << world << " " << r;
        EXPECT_TRUE(s.size() == n / world || s.size() == n / world + 1);
        // The extra items go to the first n % world ranks.
        EXPECT_EQ(s.size(), n / world + (r < n % world ? 1 : 0));
        for (int64_t i = s.begin; i < s.end; ++i) {
          EXPECT_EQ(shard_owner(n, world, i), r);
        }
        expected_begin = s.end;
      }
      EXPECT_EQ(expected_begin, n);
    }
  }
}

TEST(ShardRange, KnownValues) {
  // 10 items over 4 ranks: 3, 3, 2, 2.
  EXPECT_EQ(shard_range(10, 0, 4).begin, 0);
  EXPECT_EQ(shard_range(10, 1, 4).begin, 3);
  EXPECT_EQ(shard_range(10, 2, 4).begin, 6);
  EXPECT_EQ(shard_range(10, 3, 4).begin, 8);
  EXPECT_EQ(shard_range(10, 3, 4).end, 10);
  EXPECT_THROW(shard_range(10, 4, 4), Error);
  EXPECT_THROW(shard_range(10, 0, 0), Error);
}

TEST(Rng, SplitMixReferenceValues) {
  // SplitMix64 seeded with 0 (Vigna's reference sequence).
  Rng rng(0);
  EXPECT_EQ(rng.next_u64(), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(rng.next_u64(), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(rng.next_u64(), 0x06C45D188009454FULL);
}

TEST(Rng, StreamsDependOnEveryKeyPart) {
  std::set<uint64_t> keys;
  for (uint64_t seed : {0, 1}) {
    for (auto purpose : {RngPurpose::kSampler, RngPurpose::kAugment}) {
      for (int rank : {0, 1}) {
        for (int64_t epoch : {0, 1}) {
          keys.insert(stream_key(seed, purpose, rank, epoch));
        }
      }
    }
  }
  EXPECT_EQ(keys.size(), 16u);
  EXPECT_EQ(stream_key(7, RngPurpose::kAugment, 0, 3), stream_key(7, RngPurpose::kAugment, 0, 3));
}

TEST(Rng, UniformAndBelowAreInRangeAndBalanced) {
  Rng rng(stream_key(42, RngPurpose::kSampler, 0, 0));
  std::vector<int64_t> counts(6, 0);
  double sum = 0;
  constexpr int kDraws = 60000;
  for (int i = 0; i < kDraws; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    ++counts[rng.below(6)];
  }
  EXPECT_NEAR(sum / kDraws, 0.5, 0.01);
  // Chi-square with 5 degrees of freedom: 20.5 is the 0.999 quantile.
  double chi2 = 0;
  for (int64_t c : counts) {
    chi2 += std::pow(c - kDraws / 6.0, 2) / (kDraws / 6.0);
  }
  EXPECT_LT(chi2, 20.5);
}

TEST(Logging, RankZeroTalksEveryRankReportsErrors) {
  set_log_rank(1);
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  log_info("progress {}", 1);
  log_warn("careful");
  log_error("disk {} is full", "/x");
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  set_log_rank(0);
  EXPECT_EQ(out, "");
  EXPECT_EQ(err.find("careful"), std::string::npos);
  EXPECT_NE(err.find("error: disk /x is full"), std::string::npos) << err;
  // host:pid:rank
  EXPECT_NE(err.find(":" + std::to_string(getpid()) + ":1]"), std::string::npos) << err;

  testing::internal::CaptureStdout();
  log_info("progress {}", 2);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("progress 2"), std::string::npos);
}

}  // namespace
}  // namespace uel
