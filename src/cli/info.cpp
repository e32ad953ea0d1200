// `uel info PATH`: what a uel file or folder holds, without loading it: a dataset (classes and
// counts), an embeddings or clustering file, a checkpoint or a run folder.

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.h"
#include "uel/cli/options.h"
#include "uel/core/error.h"
#include "uel/data/dataset.h"
#include "uel/train/checkpoint.h"

namespace uel::cli {
namespace {

namespace fs = std::filesystem;

// The method of a checkpoint: its own config.ini, else its run's.
std::string method_of(const fs::path& checkpoint) {
  for (const fs::path& dir : {checkpoint, checkpoint.parent_path().parent_path()}) {
    if (const std::optional<std::string> ini = train::saved_config(dir.string())) {
      const auto values = train::ini_values(*ini);
      const auto it = values.find("train.method");
      if (it != values.end())
        return it->second;
    }
  }
  return "unknown (no config.ini)";
}

std::string describe_checkpoint(const fs::path& dir) {
  const bool done = fs::exists(dir / "DONE");
  const train::CheckpointState state = train::read_state(dir.string());
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir))
    files.push_back(entry.path().filename().string());
  std::sort(files.begin(), files.end());
  return fmt::format(
      "path: {}\nkind: checkpoint\nstate: {}\nstep: {} (next: epoch {}, step {} of it)\n"
      "world size: {}\nmethod: {}\nseed: {}\nconfig hash: {}\ngit: {}\nfiles: {}\n",
      dir.string(),
      done ? "complete (DONE)"
           : "incomplete (no DONE: a write was interrupted; resume and eval skip it)",
      state.global_step,
      state.epoch,
      state.step_in_epoch,
      state.world_size,
      method_of(dir),
      state.seed,
      state.config_hash,
      state.git_sha,
      fmt::join(files, " "));
}

std::string describe_run(const fs::path& dir) {
  // run_info checked that the run has a config.ini.
  const auto values = train::ini_values(train::saved_config(dir.string()).value_or(""));
  const auto value = [&](const std::string& key) {
    const auto it = values.find(key);
    return it == values.end() ? std::string("?") : it->second;
  };
  std::vector<std::string> checkpoints;
  if (fs::is_directory(dir / "checkpoints")) {
    for (const auto& entry : fs::directory_iterator(dir / "checkpoints")) {
      checkpoints.push_back(fmt::format(
          "{}{}",
          entry.path().filename().string(),
          fs::exists(entry.path() / "DONE") ? "" : " (incomplete)"));
    }
  }
  std::sort(checkpoints.begin(), checkpoints.end());
  const auto latest = train::latest_checkpoint(dir.string());
  return fmt::format(
      "path: {}\nkind: run\nmethod: {}\ntraining data: {}\nbatch: {}, epochs: {}\n"
      "checkpoints: {}\nlatest complete: {}\n",
      dir.string(),
      value("train.method"),
      value("data.train"),
      value("train.batch_size"),
      value("train.epochs"),
      checkpoints.empty() ? "none" : fmt::format("{}", fmt::join(checkpoints, ", ")),
      latest ? *latest : "none (uel eval and resume need one)");
}

std::string describe_dataset(const std::string& file) {
  // Labels are needed for the per-class counts; images stay on disk.
  data::ImageDataset dataset(file, /*max_memory_bytes=*/0);
  const data::DatasetInfo& info = dataset.info();
  std::vector<int64_t> counts(info.num_classes, 0);
  for (int64_t label : dataset.labels())
    ++counts[label];
  std::string text = fmt::format(
      "file: {}\nkind: dataset\nname: {}\nimages: {} x {}x{}x{} uint8\nclasses: {}\n",
      info.path,
      info.name,
      info.size,
      info.height,
      info.width,
      info.channels,
      info.num_classes);
  for (int64_t c = 0; c < info.num_classes; ++c)
    text += fmt::format("  {:>4} {:<24} {}\n", c, info.class_names[c], counts[c]);
  return text;
}

}  // namespace

int run_info(const Args& args) {
  std::string path;
  OptionSet options(
      "uel info PATH   (a dataset, embeddings or clustering .h5, a checkpoint or run)");
  options.add_positional(
      "path",
      &path,
      "HDF5 file of uel prepare/embed/cluster, a RUN folder or RUN/checkpoints/step-N");
  if (!options.parse(args))
    return 0;
  std::string text;
  if (fs::is_directory(path)) {
    const fs::path dir(path);
    if (fs::exists(dir / "state.json")) {
      text = describe_checkpoint(dir);
    } else {
      UEL_CHECK_DATA(
          fs::is_regular_file(dir / "config.ini"),
          "'{}' is neither a run folder (config.ini) nor a checkpoint (state.json)",
          path);
      text = describe_run(dir);
    }
  } else {
    const data::FileSummary summary = data::summarize_file(path);
    if (summary.kind == "dataset") {
      text = describe_dataset(path);
    } else {
      text = fmt::format("file: {}\nkind: {}\n", path, summary.kind);
      for (const auto& [name, shape] : summary.arrays)
        text += fmt::format("{}: {}\n", name, shape);
      for (const auto& [name, value] : summary.attributes)
        text += fmt::format("{}: {}\n", name, value);
    }
  }
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace uel::cli
