#pragma once

// LibTorch process set-up shared by every command and benchmark that computes.

namespace uel::runtime {

// LibTorch threads (threads <= 0: this rank's share of the cores among `local_ranks`, never more
// than the CPUs its affinity allows; more than that is warned about with the fix), the caching CPU
// allocator sized to this rank's share of memory, and a warning when the reference BLAS is active.
void configure_compute(int threads, int local_ranks);

}  // namespace uel::runtime
