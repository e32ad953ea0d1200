#pragma once

// Which GPU a rank trains on, from what its launcher tells it. A pure function of the
// environment and the visible device count, so a test covers every launcher without a GPU.

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace uel::comm {

// An environment variable's value, nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
// This process's environment (std::getenv).
EnvLookup process_env();

// The index among the visible devices (what CUDA_VISIBLE_DEVICES leaves, numbered from 0):
//  - the node-local rank is OMPI_COMM_WORLD_LOCAL_RANK (mpirun), else SLURM_LOCALID (srun), else
//    `mpi_local_rank`; the local size is OMPI_COMM_WORLD_LOCAL_SIZE, else `mpi_local_size`;
//  - CUDA_VISIBLE_DEVICES naming exactly one device: that device, whatever the local rank (the
//    launcher gave each rank its own GPU, e.g. srun --gpus-per-task=1);
//  - otherwise local rank modulo `device_count`; more local ranks than devices is a ConfigError
//    unless `share_gpus` (the MPI backend runs several ranks on one GPU).
int gpu_for_rank(
    const EnvLookup& env,
    int mpi_local_rank,
    int mpi_local_size,
    int device_count,
    bool share_gpus);

// NCCL refuses two ranks on one GPU, and a one-entry CUDA_VISIBLE_DEVICES that is the same on
// every rank (exported before mpirun) hides it from gpu_for_rank. `gpus`: each rank's GPU as
// "host PCI-bus-id", indexed by rank. A ConfigError names the first ranks that share one.
void check_distinct_gpus(const std::vector<std::string>& gpus);

}  // namespace uel::comm
