#pragma once

// The job's processes: MPI bootstrap (mpirun, srun --mpi=pmix, or alone as world size 1), the
// node-local rank that picks the GPU, and the fail-fast path that takes the whole job down.

#include <functional>
#include <memory>
#include <string>

#include <c10/core/Device.h>
#include <mpi.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

struct WorldInfo {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the processes on this node
  int local_size = 1;
};

// Initialises MPI once (MPI_THREAD_MULTIPLE) and points logging at this rank. Idempotent.
const WorldInfo& init_world(int* argc, char*** argv);
bool world_initialized();
// The initialised world, or size 1 when MPI was never initialised.
WorldInfo world();
MPI_Comm world_comm();
// Finalises MPI if it was initialised here. Idempotent.
void finalize_world();

// Ends the job because this rank failed: with more than one rank, MPI_Abort (so no peer waits
// forever in a collective); alone, finalises and returns so the caller exits with `exit_code`.
void fail_world(int exit_code);

// Runs a program's body: an exception is logged with host:pid:rank and ends the job through
// fail_world (exit status from the error type); a return finalises MPI if it was started and
// passes the body's status on.
int run_guarded(const std::function<int()>& body);

// "auto": the rank's GPU (gpu_for_rank: launcher's local rank, CUDA_VISIBLE_DEVICES) when CUDA
// is usable, else cpu; or "cpu", "cuda". More ranks on a node than visible GPUs is a ConfigError
// unless `share_gpus` (the MPI backend).
c10::Device select_device(const std::string& spec, bool share_gpus = false);

// "auto": nccl for CUDA devices when built with NCCL, mpi when distributed, else local;
// or "mpi", "nccl", "local". Collective: every rank calls it.
std::unique_ptr<Communicator> make_communicator(
    const std::string& backend, const c10::Device& device);

}  // namespace uel::comm
