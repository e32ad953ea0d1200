#include "uel/train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "uel/core/error.h"
#include "uel/core/files.h"

namespace uel::train {

namespace fs = std::filesystem;

namespace {

// Complete and incomplete checkpoint folders, oldest first.
std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root))
    return out;
  static const std::regex pattern("step-([0-9]+)");
  for (const auto& entry : fs::directory_iterator(root)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, m, pattern)) {
      out.emplace_back(std::stoll(m[1]), entry.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Reads `"key": value` from our own flat JSON.
std::string json_field(const std::string& text, const std::string& key, const std::string& path) {
  const std::regex pattern("\"" + key + "\"\\s*:\\s*\"?([^\",}]*)\"?");
  std::smatch m;
  UEL_CHECK_DATA(
      std::regex_search(text, m, pattern),
      "'{}' lacks \"{}\"; the checkpoint is damaged",
      path,
      key);
  return m[1];
}

}  // namespace

std::string checkpoint_dir(const std::string& run_dir, int64_t global_step) {
  return (fs::path(run_dir) / "checkpoints" / fmt::format("step-{:07d}", global_step)).string();
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  auto all = list_checkpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (fs::exists(it->second / "DONE"))
      return it->second.string();
  }
  return std::nullopt;
}

void prune_checkpoints(const std::string& run_dir, int64_t keep, bool idle) {
  auto all = list_checkpoints(run_dir);
  int64_t complete_seen = 0;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const bool complete = fs::exists(it->second / "DONE");
    if (complete)
      ++complete_seen;
    // Keep the newest `keep` complete ones and anything newer than them (maybe being written).
    if (complete_seen > keep || (!complete && (idle || (complete_seen >= keep && keep > 0)))) {
      std::error_code ec;
      fs::remove_all(it->second, ec);
    }
  }
}

void write_checkpoint_files(const std::string& dir, const std::function<void()>& write) {
  try {
    write();
  } catch (const DataError& e) {
    UEL_CHECK_DATA(
        false,
        "checkpoint '{}' is incomplete: {}; the newest complete checkpoint stays. Free space (or "
        "lower --train.keep) and run the same command again to resume",
        dir,
        e.message());
  }
}

void write_state(const std::string& dir, const CheckpointState& s) {
  write_file_atomically(
      (fs::path(dir) / "state.json").string(),
      fmt::format(
          "{{\"epoch\": {}, \"step_in_epoch\": {}, \"global_step\": {}, \"seed\": {}, "
          "\"world_size\": {}, \"config_hash\": \"{}\", \"git_sha\": \"{}\"}}\n",
          s.epoch,
          s.step_in_epoch,
          s.global_step,
          s.seed,
          s.world_size,
          s.config_hash,
          s.git_sha));
}

CheckpointState read_state(const std::string& dir) {
  const std::string path = (fs::path(dir) / "state.json").string();
  std::ifstream in(path);
  UEL_CHECK_DATA(in.good(), "cannot read '{}'", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  CheckpointState s;
  try {
    s.epoch = std::stoll(json_field(text, "epoch", path));
    s.step_in_epoch = std::stoll(json_field(text, "step_in_epoch", path));
    s.global_step = std::stoll(json_field(text, "global_step", path));
    s.seed = std::stoull(json_field(text, "seed", path));
    s.world_size = std::stoi(json_field(text, "world_size", path));
  } catch (const std::invalid_argument&) {
    UEL_CHECK_DATA(false, "'{}' holds a malformed number; the checkpoint is damaged", path);
  }
  s.config_hash = json_field(text, "config_hash", path);
  s.git_sha = json_field(text, "git_sha", path);
  return s;
}

void mark_done(const std::string& dir) {
  write_file_atomically((fs::path(dir) / "DONE").string(), "complete\n");
}

std::map<std::string, std::string> ini_values(const std::string& ini) {
  std::map<std::string, std::string> out;
  std::istringstream in(ini);
  std::string line, section;
  while (std::getline(in, line)) {
    if (!line.empty() && line.front() == '[' && line.back() == ']') {
      section = line.substr(1, line.size() - 2);
    } else if (const size_t eq = line.find(" = "); eq != std::string::npos) {
      out[section + "." + line.substr(0, eq)] = line.substr(eq + 3);
    }
  }
  return out;
}

std::optional<std::string> saved_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / "config.ini";
  if (!fs::is_regular_file(path))
    return std::nullopt;
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void check_checkpoint_options(
    const std::string& dir, const std::string& ini, const std::string& hint) {
  const std::optional<std::string> saved_ini = saved_config(dir);
  if (!saved_ini)
    return;
  const auto saved = ini_values(*saved_ini);
  const auto now = ini_values(ini);
  std::vector<std::string> changed;
  for (const char* key :
       {"model.arch",
        "model.stem",
        "model.width",
        "model.depth",
        "model.pool_grid",
        "model.head_hidden",
        "model.low_dim",
        "train.method"}) {
    const auto was = saved.find(key), is = now.find(key);
    if (was != saved.end() && is != now.end() && was->second != is->second)
      changed.push_back(fmt::format("{} {} -> {}", key, was->second, is->second));
  }
  UEL_CHECK_CONFIG(
      changed.empty(),
      "checkpoint '{}' holds another model or method than these options ask for (saved -> "
      "asked: {}); {}",
      dir,
      fmt::join(changed, ", "),
      hint);
}

const std::set<std::string>& run_control_options() {
  static const std::set<std::string> run_control = {
      "train.max_steps",
      "train.resume",
      "train.threads",
      "train.log_every",
      "train.checkpoint_every",
      "train.keep",
      "data.workers",
      "data.prefetch",
      "eval.every",
      "comm.timeout_s",
      "comm.stop_timeout_s",
      "train.trace",
      "train.trace_events",
      "train.noise_scale"};
  return run_control;
}

std::vector<std::string> changed_options(const std::string& saved_ini, const std::string& ini) {
  const std::set<std::string>& run_control = run_control_options();
  const auto before = ini_values(saved_ini), after = ini_values(ini);
  std::vector<std::string> changed;
  for (const auto& [key, now] : after) {
    const auto it = before.find(key);
    const std::string saved = it == before.end() ? "(unset)" : it->second;
    if (saved != now && !run_control.count(key))
      changed.push_back(fmt::format("{} {} -> {}", key, saved, now));
  }
  return changed;
}

}  // namespace uel::train
