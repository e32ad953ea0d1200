#pragma once

// A caching CPU allocator for LibTorch. The default one returns every block to the C library,
// which unmaps blocks of 128 KiB and more; the next step's tensors of the same sizes then fault
// their pages in again. Where a page fault is expensive (in a VM: 60 MiB took 157 ms to touch
// the first time and 2.4 ms the second on the 2-core development machine) that dominates a
// step's elementwise work. Blocks of 1 MiB and more are kept when freed and reused for requests
// of the same size class (at most 25% larger), up to a cap on the bytes held.

#include <cstdint>

namespace uel::runtime {

struct CpuCacheStats {
  int64_t hits = 0;          // large requests served from the cache
  int64_t misses = 0;        // large requests that went to the C library
  int64_t cached_bytes = 0;  // held for reuse now
};

// Makes it LibTorch's CPU allocator (from then on; earlier tensors keep their deleters).
// Idempotent; the last call's cap applies.
void install_caching_cpu_allocator(int64_t max_cached_bytes);

CpuCacheStats caching_cpu_allocator_stats();

}  // namespace uel::runtime
