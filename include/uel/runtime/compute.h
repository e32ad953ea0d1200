#pragma once

// LibTorch process set-up shared by every command and benchmark that computes.

#include <string>

namespace uel::runtime {

// What the CPU can run, for OpenBLAS's kernel choice.
struct CpuFeatures {
  bool avx2_fma = false;
  bool avx512 = false;  // F, CD, BW, DQ and VL: what OpenBLAS's SkylakeX kernels use
};
CpuFeatures cpu_features();

// OpenBLAS picks its kernels by CPU model when it loads; a release that does not know the model
// falls back to its generic SSE3 kernels, "Prescott" (OpenBLAS 0.3.21 on an AVX-512 Xeon VM: 37
// against 309 GFLOP/s with its SkylakeX kernels). The kernels this CPU should get instead
// (OPENBLAS_CORETYPE's value), or "" where OpenBLAS chose something else.
std::string openblas_kernels_for(const std::string& corename, const CpuFeatures& cpu);

// Where OpenBLAS fell back to its generic kernels on a CPU that runs better ones and the user set
// no OPENBLAS_CORETYPE: starts this program again (execv, the same process id, before MPI starts)
// with OPENBLAS_CORETYPE set, since OpenBLAS reads it only when it loads. Returns where there is
// nothing to do, or when the restart fails (with a warning that names the fix).
void use_fast_blas_kernels(char** argv);

// The BLAS LibTorch calls, e.g. "OpenBLAS, SkylakeX kernels (OPENBLAS_CORETYPE)".
std::string blas_description();

// LibTorch threads (threads <= 0: this rank's share of the cores among `local_ranks`, never more
// than the CPUs its affinity allows; more than that is warned about with the fix), the caching CPU
// allocator sized to this rank's share of memory, and a warning when the reference BLAS is active.
void configure_compute(int threads, int local_ranks);

}  // namespace uel::runtime
