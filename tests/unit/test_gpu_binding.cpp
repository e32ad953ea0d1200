// gpu_for_rank by environment: mpirun, srun, mpirun inside sbatch, per-task CUDA_VISIBLE_DEVICES,
// too many ranks, malformed variables. No GPU needed: the device count is an argument.

#include <map>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/comm/gpu_binding.h"
#include "uel/core/error.h"

namespace uel::comm {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    return it != vars.end() ? std::optional<std::string>(it->second) : std::nullopt;
  };
}

// Local rank and size from MPI's shared-memory split when no launcher variable is set.
constexpr int kMpiRank = 1, kMpiSize = 2;

TEST(GpuBinding, NoLauncherUsesMpisLocalRank) {
  EXPECT_EQ(gpu_for_rank(env_of({}), kMpiRank, kMpiSize, 4, false), 1);
  EXPECT_EQ(gpu_for_rank(env_of({}), 0, 1, 1, false), 0);
}

TEST(GpuBinding, MpirunLocalRankAndSize) {
  const auto env =
      env_of({{"OMPI_COMM_WORLD_LOCAL_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  EXPECT_EQ(gpu_for_rank(env, 0, 1, 4, false), 3);
  // Several visible devices: local rank modulo their count (here 2 of 4 local ranks per GPU).
  EXPECT_EQ(gpu_for_rank(env, 0, 1, 2, /*share_gpus=*/true), 1);
}

TEST(GpuBinding, SrunLocalId) {
  EXPECT_EQ(gpu_for_rank(env_of({{"SLURM_LOCALID", "2"}}), 0, 4, 4, false), 2);
  EXPECT_EQ(gpu_for_rank(env_of({{"SLURM_LOCALID", "5"}}), 0, 8, 4, true), 1);
}

TEST(GpuBinding, MpirunInsideSbatchIgnoresTheBatchStepsLocalId) {
  // The batch shell's SLURM_LOCALID=0 is inherited by every rank mpirun starts.
  const auto env = env_of(
      {{"SLURM_LOCALID", "0"},
       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
       {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(gpu_for_rank(env, 1, 2, 2, false), 1);
}

TEST(GpuBinding, OneVisibleDeviceIsUsedWhateverTheLocalRank) {
  // srun --gpus-per-task=1: each task sees only its own GPU, as device 0.
  const auto env = env_of({{"SLURM_LOCALID", "3"}, {"CUDA_VISIBLE_DEVICES", "3"}});
  EXPECT_EQ(gpu_for_rank(env, 3, 4, 1, false), 0);
  const auto uuid =
      env_of({{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"CUDA_VISIBLE_DEVICES", "GPU-5f2a"}});
  EXPECT_EQ(gpu_for_rank(uuid, 1, 2, 1, false), 0);
}

TEST(GpuBinding, SeveralVisibleDevicesTakeLocalRankModuloCount) {
  const auto env = env_of({{"SLURM_LOCALID", "1"}, {"CUDA_VISIBLE_DEVICES", "4,5"}});
  EXPECT_EQ(gpu_for_rank(env, 1, 2, 2, false), 1);
  const auto shared = env_of({{"SLURM_LOCALID", "3"}, {"CUDA_VISIBLE_DEVICES", "4,5"}});
  EXPECT_EQ(gpu_for_rank(shared, 3, 4, 2, /*share_gpus=*/true), 1);
}

TEST(GpuBinding, MoreLocalRanksThanDevicesIsAConfigError) {
  EXPECT_THROW_WITH(
      gpu_for_rank(env_of({{"CUDA_VISIBLE_DEVICES", "0,1"}}), 0, 4, 2, false),
      ConfigError,
      "4 ranks on this node but 2 visible GPU(s) (CUDA_VISIBLE_DEVICES=0,1)");
  // One GPU and no CUDA_VISIBLE_DEVICES: the machine has one GPU, the ranks would share it.
  EXPECT_THROW_WITH(gpu_for_rank(env_of({}), 1, 2, 1, false), ConfigError, "--comm.backend=mpi");
  // A launcher's local rank beyond the devices counts even when MPI's split looks small.
  EXPECT_THROW_WITH(
      gpu_for_rank(env_of({{"SLURM_LOCALID", "2"}}), 0, 1, 2, false),
      ConfigError,
      "3 ranks on this node but 2 visible GPU(s)");
}

TEST(GpuBinding, NoDeviceOrMalformedVariablesAreConfigErrors) {
  EXPECT_THROW_WITH(
      gpu_for_rank(env_of({{"CUDA_VISIBLE_DEVICES", ""}}), 0, 1, 0, false),
      ConfigError,
      "--train.device=cpu");
  EXPECT_THROW_WITH(
      gpu_for_rank(env_of({{"SLURM_LOCALID", "x1"}}), 0, 1, 2, false),
      ConfigError,
      "SLURM_LOCALID='x1' is not a non-negative integer");
  EXPECT_THROW_WITH(
      gpu_for_rank(env_of({{"OMPI_COMM_WORLD_LOCAL_RANK", "-1"}}), 0, 1, 2, false),
      ConfigError,
      "OMPI_COMM_WORLD_LOCAL_RANK='-1'");
}

TEST(GpuBinding, RanksOnOneGpuAreNamed) {
  // The same GPU on another host, or another GPU on the same host, is not shared.
  EXPECT_NO_THROW(check_distinct_gpus({"a 0000:01:00.0", "a 0000:02:00.0", "b 0000:01:00.0"}));
  EXPECT_NO_THROW(check_distinct_gpus({}));
  EXPECT_THROW_WITH(
      check_distinct_gpus({"a 0000:01:00.0", "a 0000:02:00.0", "a 0000:01:00.0"}),
      ConfigError,
      "ranks 0 and 2 would both train on GPU a 0000:01:00.0");
  EXPECT_THROW_WITH(
      check_distinct_gpus({"a 0000:01:00.0", "a 0000:01:00.0"}), ConfigError, "--comm.backend=mpi");
}

}  // namespace
}  // namespace uel::comm
