// `uel report RUN [RUN ...] --out DIR`: the runs' curves as PNG plots and their figures as a
// Markdown table, drawn by tools/uel_report.py with Debian's python3-matplotlib. uel checks the
// arguments and hands the script the options that do not change what a run computes, so that
// "runs that differ only in ranks" means what it means for a resume.

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/ranges.h>

#include "commands.h"
#include "uel/cli/options.h"
#include "uel/core/error.h"
#include "uel/train/checkpoint.h"

extern char** environ;

namespace uel::cli {

namespace fs = std::filesystem;

int run_report(const Args& args) {
  std::vector<std::string> runs;
  std::string out;
  OptionSet options("uel report RUN [RUN ...] --out DIR   (plots and a table of training runs)");
  options.add_positional_list(
      "runs", &runs, "run folders of uel train --out (config.ini, metrics.jsonl)");
  options.add("out", &out, "folder for the PNG plots and report.md (created)");
  if (!options.parse(args))
    return 0;
  UEL_CHECK_CONFIG(!out.empty(), "--out is missing: give the folder for the plots and report.md");
  for (const std::string& run : runs) {
    for (const char* file : {"config.ini", "metrics.jsonl"}) {
      UEL_CHECK_DATA(
          fs::is_regular_file(fs::path(run) / file),
          "'{}' is not a run with metrics: it has no {}; give folders written by uel train --out",
          run,
          file);
    }
  }
  const char* from_env = std::getenv("UEL_REPORT_SCRIPT");
  const std::string script = from_env != nullptr ? from_env : UEL_REPORT_SCRIPT;
  UEL_CHECK_DATA(
      fs::is_regular_file(script),
      "the report script '{}' is missing; set UEL_REPORT_SCRIPT to tools/uel_report.py of the uel "
      "sources",
      script);
  std::vector<std::string> argv = {
      "/usr/bin/python3",
      script,
      "--out",
      out,
      "--run-control",
      fmt::format("{}", fmt::join(train::run_control_options(), ","))};
  argv.insert(argv.end(), runs.begin(), runs.end());
  std::vector<char*> c_argv;
  for (std::string& a : argv)
    c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, c_argv[0], nullptr, nullptr, c_argv.data(), environ);
  UEL_CHECK_DATA(
      spawned == 0,
      "could not run {}: {}; apt-get install python3",
      c_argv[0],
      std::strerror(spawned));
  int status = 0;
  pid_t waited = 0;
  do {
    waited = waitpid(pid, &status, 0);
  } while (waited < 0 && errno == EINTR);
  UEL_CHECK(waited == pid, "waiting for {}: {}", script, std::strerror(errno));
  // The script's own exit status (its messages follow uel's: 2 arguments, 3 data).
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace uel::cli
