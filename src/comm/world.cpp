#include "uel/comm/world.h"

#include <cstdlib>

#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include "uel/comm/gpu_binding.h"
#include "uel/comm/mpi_communicator.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#ifdef UEL_HAVE_NCCL
#include "uel/comm/nccl_communicator.h"
#endif

namespace uel::comm {

namespace {
WorldInfo g_world;
bool g_initialized_here = false;

std::string first_line(const std::string& text) {
  return text.substr(0, text.find('\n'));
}
}  // namespace

const WorldInfo& init_world(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    UEL_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "initialising MPI");
    g_initialized_here = true;
    // Gradient buckets are all-reduced from their own thread while the main thread may run
    // another communicator's collective.
    UEL_CHECK_TYPED(
        CommError,
        provided >= MPI_THREAD_MULTIPLE,
        "the MPI library provides thread level {} but uel needs MPI_THREAD_MULTIPLE; use an MPI "
        "built with thread support (Debian's OpenMPI is)",
        provided);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size);
  MPI_Comm local = MPI_COMM_NULL;
  UEL_MPI_CHECK(
      MPI_Comm_split_type(
          MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank, MPI_INFO_NULL, &local),
      "finding the ranks on this node");
  MPI_Comm_rank(local, &g_world.local_rank);
  MPI_Comm_size(local, &g_world.local_size);
  MPI_Comm_free(&local);
  set_log_rank(g_world.rank);
  return g_world;
}

bool world_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

WorldInfo world() {
  return world_initialized() ? g_world : WorldInfo{};
}

MPI_Comm world_comm() {
  UEL_CHECK(world_initialized(), "MPI is not initialised; call init_world first");
  return MPI_COMM_WORLD;
}

void finalize_world() {
  if (g_initialized_here && world_initialized()) {
    MPI_Finalize();
  }
}

void fail_world(int exit_code) {
  if (world_initialized() && g_world.size > 1) {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);  // MPI_Abort does not return; be sure of it
  }
  finalize_world();
}

int run_guarded(const std::function<int()>& body) {
  int code = 0;
  try {
    // A status the body returns ends every rank normally (a stopped run's 75 included).
    code = body();
    finalize_world();
    return code;
  } catch (const Error& e) {
    // A user's mistake reads as one sentence; UEL_DEBUG=1 adds where the check failed.
    const char* debug = std::getenv("UEL_DEBUG");
    const bool verbose = !e.user_error() || (debug != nullptr && std::string(debug) != "0");
    log_error("{}", verbose ? e.what() : e.message());
    code = e.exit_code();
  } catch (const c10::OutOfMemoryError& e) {
    log_error(
        "out of device memory: {}; lower --train.batch_size (the global batch; per rank it is "
        "batch_size / ranks) or --eval.batch_size, or run on more ranks",
        first_line(e.what_without_backtrace()));
    code = 5;
  } catch (const c10::Error& e) {
    // LibTorch's own message without its C++ backtrace.
    log_error("LibTorch: {}", e.what_without_backtrace());
    code = 1;
  } catch (const std::exception& e) {
    log_error("unexpected failure: {}", e.what());
    code = 1;
  }
  fail_world(code);
  return code;
}

c10::Device select_device(const std::string& spec, bool share_gpus) {
  const bool cuda = torch::cuda::is_available();
  if (spec == "cpu" || (spec == "auto" && !cuda)) {
    return c10::Device(c10::kCPU);
  }
  UEL_CHECK_CONFIG(
      spec == "auto" || spec == "cuda", "--train.device='{}' is not one of auto|cpu|cuda", spec);
  UEL_CHECK_CONFIG(
      cuda,
      "--train.device=cuda but no CUDA device is usable (LibTorch built without CUDA, no GPU, or "
      "CUDA_VISIBLE_DEVICES hides them); use --train.device=cpu");
  const WorldInfo w = world();
  return c10::Device(
      c10::kCUDA,
      static_cast<c10::DeviceIndex>(gpu_for_rank(
          process_env(),
          w.local_rank,
          w.local_size,
          static_cast<int>(torch::cuda::device_count()),
          share_gpus)));
}

std::unique_ptr<Communicator> make_communicator(
    const std::string& backend, const c10::Device& device) {
  const WorldInfo w = world();
  std::string chosen = backend;
  if (backend == "auto") {
#ifdef UEL_HAVE_NCCL
    chosen = device.is_cuda() ? "nccl" : (w.size > 1 ? "mpi" : "local");
#else
    chosen = w.size > 1 ? "mpi" : "local";
#endif
  }
  if (chosen == "local") {
    UEL_CHECK_CONFIG(
        w.size == 1,
        "--comm.backend=local runs one process, but this job has {} ranks; use mpi or nccl",
        w.size);
    return std::make_unique<LocalCommunicator>(device);
  }
  if (chosen == "mpi") {
    return std::make_unique<MpiCommunicator>(world_comm(), device);
  }
  if (chosen == "nccl") {
#ifdef UEL_HAVE_NCCL
    UEL_CHECK_CONFIG(
        device.is_cuda(), "--comm.backend=nccl needs a CUDA device; use mpi for CPU training");
    return std::make_unique<NcclCommunicator>(world_comm(), device.index());
#else
    UEL_CHECK_CONFIG(
        false,
        "--comm.backend=nccl: this uel was built without NCCL; rebuild with the CUDA toolkit "
        "and nccl.h (-DUEL_USE_NCCL=ON) or use mpi");
#endif
  }
  UEL_CHECK_CONFIG(false, "--comm.backend='{}' is not one of auto|mpi|nccl|local", backend);
  return nullptr;
}

}  // namespace uel::comm
