// The caching CPU allocator: large blocks come back from the cache, small ones and those over
// the cap go to the C library, and LibTorch computes the same through it.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "uel/runtime/cpu_allocator.h"

namespace uel::runtime {
namespace {

TEST(CachingCpuAllocator, ReusesLargeBlocksOfTheSameSizeClass) {
  install_caching_cpu_allocator(int64_t{64} << 20);
  const CpuCacheStats start = caching_cpu_allocator_stats();
  void* first = nullptr;
  {
    at::Tensor a = at::empty({(1 << 20) + 1}, at::kFloat);  // 4 MiB + 4 bytes: the 5 MiB class
    first = a.data_ptr();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
  }
  EXPECT_GE(caching_cpu_allocator_stats().cached_bytes, start.cached_bytes + (4 << 20));
  {
    // 4.5 MiB is in the same class: the cached block serves it.
    at::Tensor b = at::empty({(1 << 20) + (1 << 17)}, at::kFloat);
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_EQ(caching_cpu_allocator_stats().hits, start.hits + 1);
    b.fill_(2);
    EXPECT_EQ(b.sum().item<double>(), 2.0 * ((1 << 20) + (1 << 17)));
  }
  {
    at::Tensor small = at::empty({16}, at::kFloat);       // not cached
    at::Tensor other = at::empty({3 << 20}, at::kFloat);  // 12 MiB: another class, a miss
    EXPECT_NE(other.data_ptr(), first);
  }
  EXPECT_EQ(caching_cpu_allocator_stats().misses, start.misses + 2);
}

TEST(CachingCpuAllocator, HoldsNoMoreThanTheCap) {
  install_caching_cpu_allocator(int64_t{6} << 20);
  EXPECT_LE(caching_cpu_allocator_stats().cached_bytes, int64_t{6} << 20);
  {
    at::Tensor a = at::empty({1 << 20}, at::kFloat);
    at::Tensor b = at::empty({1 << 20}, at::kFloat);
    at::Tensor c = at::empty({1 << 20}, at::kFloat);
  }
  EXPECT_LE(caching_cpu_allocator_stats().cached_bytes, int64_t{6} << 20);
  install_caching_cpu_allocator(0);
  EXPECT_EQ(caching_cpu_allocator_stats().cached_bytes, 0);
  { at::Tensor d = at::empty({8 << 20}, at::kFloat); }
  EXPECT_EQ(caching_cpu_allocator_stats().cached_bytes, 0);
}

}  // namespace
}  // namespace uel::runtime
