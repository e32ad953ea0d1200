#include "uel/comm/gpu_binding.h"

#include <algorithm>
#include <cstdlib>
#include <map>

#include "uel/core/error.h"

namespace uel::comm {

namespace {

std::optional<int> local_index(const EnvLookup& env, const std::string& name) {
  const std::optional<std::string> value = env(name);
  if (!value)
    return std::nullopt;
  size_t used = 0;
  int parsed = -1;
  try {
    parsed = std::stoi(*value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  UEL_CHECK_CONFIG(
      used == value->size() && parsed >= 0,
      "{}='{}' is not a non-negative integer; the launcher (mpirun, srun) sets it, so unset it "
      "when starting uel by hand",
      name,
      *value);
  return parsed;
}

int count_entries(const std::string& list) {
  return list.empty() ? 0 : static_cast<int>(std::count(list.begin(), list.end(), ',')) + 1;
}

}  // namespace

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    return value != nullptr ? std::optional<std::string>(value) : std::nullopt;
  };
}

int gpu_for_rank(
    const EnvLookup& env,
    int mpi_local_rank,
    int mpi_local_size,
    int device_count,
    bool share_gpus) {
  const std::optional<std::string> visible = env("CUDA_VISIBLE_DEVICES");
  UEL_CHECK_CONFIG(
      device_count > 0,
      "no GPU is visible (CUDA_VISIBLE_DEVICES={}); train on --train.device=cpu",
      visible.value_or("unset"));
  // mpirun's variables first: ranks it starts inside an sbatch script inherit the batch step's
  // SLURM_LOCALID=0.
  std::optional<int> env_rank = local_index(env, "OMPI_COMM_WORLD_LOCAL_RANK");
  const std::optional<int> env_size =
      env_rank ? local_index(env, "OMPI_COMM_WORLD_LOCAL_SIZE") : std::nullopt;
  if (!env_rank)
    env_rank = local_index(env, "SLURM_LOCALID");
  const int local_rank = env_rank.value_or(mpi_local_rank);
  const int local_size = std::max(local_rank + 1, env_size.value_or(mpi_local_size));
  if (visible && count_entries(*visible) == 1)
    return 0;
  // Two ranks on one GPU: NCCL refuses them; MPI runs them, slower (asked for explicitly).
  UEL_CHECK_CONFIG(
      share_gpus || local_size <= device_count,
      "{} ranks on this node but {} visible GPU(s) (CUDA_VISIBLE_DEVICES={}); start one rank per "
      "GPU (launch/uel-run, srun --gpus-per-task=1), make more GPUs visible, share them with "
      "--comm.backend=mpi, or train on --train.device=cpu",
      local_size,
      device_count,
      visible.value_or("unset"));
  return local_rank % device_count;
}

void check_distinct_gpus(const std::vector<std::string>& gpus) {
  std::map<std::string, int> first_rank;
  for (int rank = 0; rank < static_cast<int>(gpus.size()); ++rank) {
    const auto [it, fresh] = first_rank.emplace(gpus[rank], rank);
    UEL_CHECK_CONFIG(
        fresh,
        "ranks {} and {} would both train on GPU {}, and NCCL refuses two ranks on one GPU "
        "(is one CUDA_VISIBLE_DEVICES exported to every rank?); give each rank its own GPU "
        "(launch/uel-run, srun --gpus-per-task=1) or share it with --comm.backend=mpi",
        it->second,
        rank,
        gpus[rank]);
  }
}

}  // namespace uel::comm
