#include "uel/runtime/compute.h"

#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>

#include <ATen/Parallel.h>

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

}  // namespace

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
  std::string blas;
  dl_iterate_phdr(find_blas, &blas);
  if (blas.find("/blas/libblas") != std::string::npos) {
    log_warn(
        "the reference BLAS ({}) is active and makes matrix products ~35x slower; "
        "install OpenBLAS: apt-get install libopenblas0-openmp",
        blas);
  }
}

}  // namespace uel::runtime
