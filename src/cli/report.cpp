// `uel report RUN [RUN ...] --out DIR`: the runs' curves as PNG plots and their figures as a
// Markdown table, drawn by tools/uel_report.py with Debian's python3-matplotlib. uel checks the
// arguments and hands the script the options that do not change what a run computes, so that
// "runs that differ only in ranks" means what it means for a resume.

#include <filesystem>

#include <fmt/ranges.h>

#include "commands.h"
#include "uel/cli/options.h"
#include "uel/core/error.h"
#include "uel/train/checkpoint.h"

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
  std::vector<std::string> script_args = {
      "--out",
      out,
      "--run-control",
      fmt::format("{}", fmt::join(train::run_control_options(), ","))};
  script_args.insert(script_args.end(), runs.begin(), runs.end());
  return run_script("UEL_REPORT_SCRIPT", UEL_REPORT_SCRIPT, script_args);
}

}  // namespace uel::cli
