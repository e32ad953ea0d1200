#include "uel/runtime/compute.h"

#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "uel/core/logging.h"
#include "uel/runtime/cpu_allocator.h"

namespace uel::runtime {
namespace {

int find_blas(dl_phdr_info* info, size_t, void* data) {
  const std::string name = info->dlpi_name != nullptr ? info->dlpi_name : "";
  if (name.find("libblas.so") != std::string::npos) {
    char resolved[PATH_MAX];
    if (realpath(name.c_str(), resolved) != nullptr) {
      *static_cast<std::string*>(data) = resolved;
      return 1;
    }
  }
  return 0;
}

int machine_cores() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The CPUs this process may run on (its affinity, e.g. the core mpirun bound it to).
int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0)
    return machine_cores();
  return std::max(1, CPU_COUNT(&set));
}

// The resolved path of the libblas.so LibTorch loaded (Debian's alternatives pick it); "" if none.
std::string loaded_blas() {
  std::string blas;
  dl_iterate_phdr(find_blas, &blas);
  return blas;
}

// OpenBLAS's own report of its kernels; null where another BLAS is loaded.
const char* openblas_corename() {
  using Corename = char* (*)();
  const auto get = reinterpret_cast<Corename>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return get != nullptr ? get() : nullptr;
}

}  // namespace

CpuFeatures cpu_features() {
  CpuFeatures cpu;
#if defined(__x86_64__) && defined(__GNUC__)
  // CPUID and the registers the OS saves (xgetbv), as GCC's run-time checks read them.
  __builtin_cpu_init();
  cpu.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  cpu.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl");
#endif
  return cpu;
}

std::string openblas_kernels_for(const std::string& corename, const CpuFeatures& cpu) {
  if (corename != "Prescott")
    return "";
  if (cpu.avx512)
    return "SkylakeX";
  return cpu.avx2_fma ? "Haswell" : "";
}

void use_fast_blas_kernels(char** argv) {
  const char* corename = openblas_corename();
  if (corename == nullptr || std::getenv("OPENBLAS_CORETYPE") != nullptr)
    return;
  const std::string kernels = openblas_kernels_for(corename, cpu_features());
  if (kernels.empty())
    return;
  setenv("OPENBLAS_CORETYPE", kernels.c_str(), 1);
  execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE");
  log_warn(
      "OpenBLAS runs its generic {} kernels on this CPU, which runs its {} kernels several times "
      "faster, and restarting with them failed ({}); set OPENBLAS_CORETYPE={} before starting uel",
      corename,
      kernels,
      std::strerror(errno),
      kernels);
}

std::string blas_description() {
  if (const char* corename = openblas_corename()) {
    return fmt::format(
        "OpenBLAS, {} kernels{}",
        corename,
        std::getenv("OPENBLAS_CORETYPE") != nullptr ? " (OPENBLAS_CORETYPE)" : "");
  }
  const std::string blas = loaded_blas();
  return blas.empty() ? "a BLAS linked into LibTorch" : blas;
}

void configure_compute(int threads, int local_ranks) {
  const int allowed = allowed_cpus();
  if (threads <= 0) {
    threads = std::max(1, std::min(allowed, machine_cores() / std::max(1, local_ranks)));
  } else if (threads > allowed) {
    // mpirun binds a rank to one core unless told otherwise: more threads than CPUs share them
    // and every step slows down (about half the speed at 2 threads on 1 core).
    log_warn(
        "--train.threads={} but this process may run on {} CPU(s) only (its affinity): start it "
        "with mpirun --bind-to none or --map-by slot:PE={}, or lower --train.threads",
        threads,
        allowed,
        threads);
  }
  at::set_num_threads(threads);
  // Up to a quarter of this rank's share of the machine's memory stays cached for reuse.
  const int64_t memory = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  install_caching_cpu_allocator(memory / 4 / std::max(1, local_ranks));
  // Debian's LibTorch uses whichever libblas.so.3 is selected; the reference one is ~35x slower.
  const std::string blas = loaded_blas();
  if (blas.find("/blas/libblas") != std::string::npos) {
    log_warn(
        "the reference BLAS ({}) is active and makes matrix products ~35x slower; "
        "install OpenBLAS: apt-get install libopenblas0-openmp",
        blas);
  }
}

}  // namespace uel::runtime
