#pragma once

// Subcommands of the `uel` executable (private to src/cli). Each takes the arguments after its
// name and returns the process exit status.

#include <memory>
#include <string>
#include <vector>

#include "uel/comm/world.h"

namespace uel::train {
class Trainer;
}

namespace uel::cli {

struct Config;

using Args = std::vector<std::string>;

int run_prepare(const Args& args);
int run_info(const Args& args);
int run_bench(const Args& args);
int run_train(const Args& args);
int run_eval(const Args& args);
int run_embed(const Args& args);
int run_cluster(const Args& args);
int run_neighbours(const Args& args);
int run_report(const Args& args);
int run_show(const Args& args);

// Set-up of every command that computes on ranks: MPI (or world size 1), then LibTorch threads
// (`threads` per rank, 0 = this rank's share of the cores) and the CPU allocator.
const comm::WorldInfo& start_ranks(int threads);

// A run's Trainer holding the weights of its newest complete checkpoint, configured by the run's
// config.ini alone (`uel neighbours --run`); `checkpoint` gets the checkpoint's folder.
std::unique_ptr<train::Trainer> open_saved_run(
    const std::string& run, Config* config, std::string* checkpoint);

// Runs `python3 SCRIPT ARGS...` and returns its exit status; the environment variable `env`
// overrides the script's path (a uel installed away from its sources).
int run_script(const char* env, const std::string& script, const std::vector<std::string>& args);

}  // namespace uel::cli
