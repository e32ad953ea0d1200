#pragma once

// Subcommands of the `uel` executable (private to src/cli). Each takes the arguments after its
// name and returns the process exit status.

#include <string>
#include <vector>

namespace uel::cli {

using Args = std::vector<std::string>;

int run_prepare(const Args& args);
int run_info(const Args& args);
int run_bench(const Args& args);
int run_train(const Args& args);
int run_eval(const Args& args);
int run_embed(const Args& args);
int run_cluster(const Args& args);

// Process set-up shared by the commands that compute: LibTorch threads, BLAS check.
void configure_compute(int threads, int local_ranks);

}  // namespace uel::cli
