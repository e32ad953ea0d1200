// The operator profile: every call is counted once under its own name, nested ops' time is
// taken out of their callers' (self time), the rows add up to the time inside outermost ops,
// autograd's backward is recorded, and nothing is recorded once the profile ends.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "uel/core/error.h"
#include "uel/runtime/op_profile.h"

namespace uel::runtime {
namespace {

std::map<std::string, OpTime> by_name(const std::vector<OpTime>& ops) {
  std::map<std::string, OpTime> result;
  for (const OpTime& op : ops)
    result[op.name] = op;
  return result;
}

TEST(OpProfile, CountsCallsAndSelfTimesAddUp) {
  const at::Tensor a = at::randn({64, 64}), b = at::randn({64, 64});
  OpProfile profile;
  for (int i = 0; i < 3; ++i)
    at::mm(a, b);
  // aten::linear calls other ops (a matmul): its self time excludes theirs.
  const at::Tensor w = at::randn({8, 64});
  for (int i = 0; i < 2; ++i)
    at::linear(a, w);
  const std::vector<OpTime> ops = profile.ops();
  const auto named = by_name(ops);
  ASSERT_EQ(named.count("aten::mm"), 1u);
  EXPECT_GE(named.at("aten::mm").calls, 3);
  ASSERT_EQ(named.count("aten::linear"), 1u);
  EXPECT_EQ(named.at("aten::linear").calls, 2);
  double sum = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    EXPECT_GE(ops[i].self_seconds, 0) << ops[i].name;
    if (i > 0) {
      EXPECT_GE(ops[i - 1].self_seconds, ops[i].self_seconds);  // largest first
    }
    sum += ops[i].self_seconds;
  }
  EXPECT_NEAR(sum, profile.inside_seconds(), 1e-9 + 1e-9 * sum);
}

TEST(OpProfile, RecordsBackwardAndStopsWhenItEnds) {
  const torch::Tensor x = torch::randn({16, 16}, torch::requires_grad());
  {
    OpProfile profile;
    torch::relu(x).sum().backward();
    const auto named = by_name(profile.ops());
    EXPECT_EQ(named.count("aten::relu"), 1u);
    // The autograd nodes of the backward pass run on this thread.
    EXPECT_EQ(named.count("ReluBackward0"), 1u);
    EXPECT_EQ(named.count("SumBackward0"), 1u);
  }
  OpProfile later;
  at::mm(x.detach(), x.detach());
  EXPECT_EQ(by_name(later.ops()).count("aten::relu"), 0u);
  EXPECT_EQ(by_name(later.ops()).count("aten::mm"), 1u);
}

TEST(OpProfile, OneAtATime) {
  OpProfile profile;
  EXPECT_THROW(OpProfile second, Error);
}

}  // namespace
}  // namespace uel::runtime
