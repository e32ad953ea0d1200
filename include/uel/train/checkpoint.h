#pragma once

// Checkpoints (DESIGN.md §1): RUN/checkpoints/step-NNNNNNN/ with model.pt (weights archive),
// optim.pt (optimizer state), state.json, config.ini (the run's resolved options), the method's
// files (nce: shard-RRRR.h5 per rank, memory-bank rows), and DONE, which rank 0 writes last after a
// barrier: a folder without DONE is incomplete and ignored.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace uel::train {

struct CheckpointState {
  int64_t epoch = 0;          // epoch to continue in
  int64_t step_in_epoch = 0;  // first step of that epoch still to run
  int64_t global_step = 0;    // steps done
  uint64_t seed = 0;
  int world_size = 1;
  std::string config_hash;
  std::string git_sha;
};

std::string checkpoint_dir(const std::string& run_dir, int64_t global_step);
// The newest complete checkpoint of a run, if any.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);
// Removes all but the newest `keep` complete checkpoints, and the incomplete ones older than
// them; with `idle` (no checkpoint is being written: at start-up) every incomplete one, so that
// what a killed job left behind does not pile up.
void prune_checkpoints(const std::string& run_dir, int64_t keep, bool idle = false);

// Runs `write`, which writes files of checkpoint `dir`; a failed write (DataError) becomes one
// that names the folder and says the newest complete checkpoint stays (the folder has no DONE).
void write_checkpoint_files(const std::string& dir, const std::function<void()>& write);

void write_state(const std::string& dir, const CheckpointState& state);
CheckpointState read_state(const std::string& dir);
void mark_done(const std::string& dir);

// `section.key` -> value of a resolved configuration (`[section]` / `key = value` text).
std::map<std::string, std::string> ini_values(const std::string& ini);

// The resolved configuration saved in `dir` (a run folder or a checkpoint): its config.ini, or
// nullopt when it has none (checkpoints written before they carried one).
std::optional<std::string> saved_config(const std::string& dir);

// Options that steer how a run executes rather than what it computes (train.max_steps,
// train.resume, train.threads, train.log_every, train.checkpoint_every, train.keep, data.workers,
// data.prefetch, eval.every, comm.timeout_s, train.trace, train.noise_scale): changing them is
// how a run is split, moved or observed.
const std::set<std::string>& run_control_options();

// The options that differ between two resolved configurations (`[section]` / `key = value` text)
// as "section.key saved -> now", in order, leaving out run_control_options().
std::vector<std::string> changed_options(const std::string& saved_ini, const std::string& ini);

// ConfigError when `ini` (a run's resolved options) differs from checkpoint `dir`'s saved
// config.ini in an option that shapes what the checkpoint holds: model.arch, model.stem,
// model.width, model.low_dim, train.method. `hint` says what to do instead. A checkpoint without
// config.ini passes (the weights' names and shapes are checked when they load).
void check_checkpoint_options(
    const std::string& dir, const std::string& ini, const std::string& hint);

}  // namespace uel::train
