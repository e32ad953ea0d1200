// The `uel` executable: one binary, git-like subcommands (DESIGN.md §1).

#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "uel/comm/world.h"
#include "uel/core/logging.h"
#include "uel/core/version.h"
#include "uel/runtime/compute.h"

namespace {

struct Command {
  std::function<int(const uel::cli::Args&)> run;
  const char* summary;
};

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> table = {
      {"prepare", {uel::cli::run_prepare, "convert fashion-mnist | cifar10 | image-list to HDF5"}},
      {"info", {uel::cli::run_info, "describe a dataset, embeddings, run or checkpoint"}},
      {"bench", {uel::cli::run_bench, "benchmarks: loader, comm, step, bank, kmeans"}},
      {"cluster",
       {uel::cli::run_cluster, "distributed k-means on embeddings (NMI/ARI if labelled)"}},
      {"train", {uel::cli::run_train, "train an embedding (mpirun/srun for several ranks)"}},
      {"eval", {uel::cli::run_eval, "evaluate a run's latest checkpoint (kNN, Recall@K, NMI)"}},
      {"embed", {uel::cli::run_embed, "write a dataset's embeddings to HDF5"}},
      {"neighbours",
       {uel::cli::run_neighbours, "top-k rows of an embeddings file for query rows (JSON)"}},
      {"show", {uel::cli::run_show, "retrieval grid, embedding maps and per-class kNN as PNGs"}},
      {"report", {uel::cli::run_report, "plots and a table of training runs (sweeps, scaling)"}},
  };
  return table;
}

std::string usage() {
  std::string out =
      "usage: uel <command> [options]   (uel <command> --help for its options)\n\ncommands:\n";
  for (const auto& [name, command] : commands()) {
    out += fmt::format("  {:<10} {}\n", name, command.summary);
  }
  out +=
      "\nexit status: 0 done, 1 internal error, 2 configuration (an option or the command line),\n"
      "  3 data (a missing or malformed file, a file that cannot be written: a full disk),\n"
      "  4 communication (a failed or timed-out collective, the watchdog, comm.check_order),\n"
      "  5 CUDA (out of device memory included),\n"
      "  75 stopped by SIGUSR1/SIGTERM after a checkpoint (the same command resumes)\n"
      "  UEL_DEBUG=1 adds the code location to configuration and data errors.\n";
  return out + fmt::format("\n{}\n", uel::version_string());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string first = argc > 1 ? argv[1] : "";
  if (first.empty() || first == "--help" || first == "-h" || first == "help") {
    std::fputs(usage().c_str(), argc > 1 ? stdout : stderr);
    return argc > 1 ? 0 : 2;
  }
  if (first == "--version" || first == "version") {
    std::printf("uel %s\n", uel::version_string().c_str());
    return 0;
  }
  const auto it = commands().find(first);
  if (it == commands().end()) {
    uel::log_error("unknown command '{}'; `uel --help` lists the commands", first);
    return 2;
  }
  uel::runtime::use_fast_blas_kernels(argv);
  // A failure on one rank of a distributed command ends the whole job (MPI_Abort).
  return uel::comm::run_guarded(
      [&] { return it->second.run(uel::cli::Args(argv + 2, argv + argc)); });
}
