// OpenBLAS's kernels: uel overrides only OpenBLAS's generic fallback, with the best kernels the
// CPU's features allow, and never a choice OpenBLAS made from a CPU model it knew.

#include <gtest/gtest.h>

#include "uel/runtime/compute.h"

namespace uel::runtime {
namespace {

TEST(OpenblasKernels, OnlyTheGenericFallbackIsReplaced) {
  const CpuFeatures avx512{/*avx2_fma=*/true, /*avx512=*/true};
  const CpuFeatures avx2{/*avx2_fma=*/true, /*avx512=*/false};
  const CpuFeatures sse{/*avx2_fma=*/false, /*avx512=*/false};
  EXPECT_EQ(openblas_kernels_for("Prescott", avx512), "SkylakeX");
  EXPECT_EQ(openblas_kernels_for("Prescott", avx2), "Haswell");
  EXPECT_EQ(openblas_kernels_for("Prescott", sse), "");
  for (const char* known : {"Haswell", "SkylakeX", "Zen", "Cooperlake", "Sandybridge", ""})
    EXPECT_EQ(openblas_kernels_for(known, avx512), "") << known;
}

}  // namespace
}  // namespace uel::runtime
