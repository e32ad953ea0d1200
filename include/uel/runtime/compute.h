#pragma once

// LibTorch process set-up shared by every command and benchmark that computes.

namespace uel::runtime {

// The CPUs this process may run on (its affinity, e.g. the core mpirun bound it to).
int allowed_cpus();

// LibTorch threads (threads <= 0: this rank's share of the cores among `local_ranks`, never more
// than allowed_cpus(); more than that is warned about with the fix), the caching CPU allocator
// sized to this rank's share of memory, and a warning when the reference BLAS is active.
void configure_compute(int threads, int local_ranks);

}  // namespace uel::runtime
