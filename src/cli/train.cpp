// uel train | eval | embed: the commands that build a Trainer.

#include <cstdio>
#include <filesystem>
#include <numeric>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "commands.h"
#include "uel/cli/config.h"
#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/data/dataset.h"
#include "uel/runtime/stop_signals.h"
#include "uel/train/checkpoint.h"
#include "uel/train/trainer.h"

namespace uel::cli {

namespace fs = std::filesystem;

namespace {

// RUN/config.ini, the resolved options a run trained with.
std::string run_ini(const std::string& run) {
  const std::string ini = (fs::path(run) / "config.ini").string();
  UEL_CHECK_CONFIG(
      fs::is_regular_file(ini),
      "--run '{}' holds no config.ini; is it a `uel train --out` folder?",
      run);
  return ini;
}

// Parses a run's own config.ini first, then the command line (`--run RUN` reads RUN/config.ini).
bool parse_with_run(OptionSet& options, std::string* run, const Args& args) {
  Args full = args;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string value;
    if (args[i] == "--run" && i + 1 < args.size())
      value = args[i + 1];
    if (args[i].rfind("--run=", 0) == 0)
      value = args[i].substr(6);
    if (!value.empty())
      full.insert(full.begin(), {"--config", run_ini(value)});
  }
  if (!options.parse(full))
    return false;
  UEL_CHECK_CONFIG(!run->empty(), "--run RUN is required");
  return true;
}

// A run's Trainer holding the weights of its newest complete checkpoint (eval, embed). `ini`:
// the resolved options, which must describe the checkpoint's model and method.
std::unique_ptr<train::Trainer> open_run(
    Config& config, const std::string& run, const std::string& ini, std::string* checkpoint) {
  // Before MPI starts: a run with nothing to evaluate, or options that cannot load it.
  const auto latest = train::latest_checkpoint(run);
  UEL_CHECK_DATA(
      latest.has_value(),
      "--run '{}' has no complete checkpoint (a checkpoints/step-N folder with DONE) yet; train "
      "it further or point --run at another run",
      run);
  *checkpoint = *latest;
  train::check_checkpoint_options(
      *checkpoint, ini, "drop those options: the run's config.ini holds the ones it trained with");
  start_ranks(config.train.threads);
  config.weights.clear();  // the checkpoint's weights replace any initial ones
  auto trainer = std::make_unique<train::Trainer>(config, run);
  trainer->load_checkpoint(*checkpoint, /*with_state=*/false);
  return trainer;
}

}  // namespace

std::unique_ptr<train::Trainer> open_saved_run(
    const std::string& run, Config* config, std::string* checkpoint) {
  OptionSet options("");
  config->declare(options);
  options.parse({"--config", run_ini(run)});
  return open_run(*config, run, options.to_ini(), checkpoint);
}

int run_train(const Args& args) {
  Config config;
  std::string out;
  OptionSet options(
      "[mpirun -np N] uel train --config configs/X.ini --out RUN [--section.key=value ...]");
  config.declare(options);
  options.add("out", &out, "run folder: config.ini, metrics.jsonl, checkpoints/");
  options.add_validator([&] { train::validate(config); });
  if (!options.parse(args))
    return 0;
  UEL_CHECK_CONFIG(!out.empty(), "--out RUN is required (the run folder)");
  // Early: a stop signal before the first step (start-up, MPI, data) stops after that step
  // instead of ending the process without a checkpoint.
  runtime::install_stop_signals();
  config.resolved_ini = options.to_ini();
  const std::string& resume = config.train.resume;
  const auto from = resume == "auto"   ? train::latest_checkpoint(out)
                    : resume == "none" ? std::nullopt
                                       : std::optional<std::string>(resume);
  if (from) {
    train::check_checkpoint_options(
        *from,
        config.resolved_ini,
        "resume with the options it was saved with, or train afresh (another --out, or "
        "--train.resume=none)");
  }
  start_ranks(config.train.threads);
  const auto stop_requested = [] { return runtime::stop_signal() != 0; };
  comm::Watchdog::instance().bound_stop(config.comm.stop_timeout_s, stop_requested);
  train::Trainer trainer(config, out);
  if (trainer.run(stop_requested) == train::RunEnd::kStopped) {
    log_info(
        "exit status {}: stopped by a signal (SIGUSR1 or SIGTERM); the same command resumes",
        kExitStopped);
    return kExitStopped;
  }
  return 0;
}

int run_eval(const Args& args) {
  Config config;
  std::string run, protocol;
  OptionSet options("[mpirun -np N] uel eval --run RUN [--protocol knn,recall,nmi]");
  config.declare(options);
  options.add("run", &run, "run folder of `uel train`");
  options.add(
      "protocol",
      &protocol,
      "comma-separated knn, recall, nmi (default: the run's --eval.protocol)");
  if (!parse_with_run(options, &run, args))
    return 0;
  if (!protocol.empty())
    config.eval.protocol = protocol;
  std::string checkpoint;
  auto trainer = open_run(config, run, options.to_ini(), &checkpoint);
  const eval::Evaluation evaluation = trainer->evaluate();
  if (comm::world().rank == 0) {
    std::printf(
        "%s\n",
        fmt::format(R"({{{}, "checkpoint": "{}"}})", evaluation.json_fields(), checkpoint).c_str());
  }
  return 0;
}

int run_embed(const Args& args) {
  Config config;
  std::string run, data, out;
  OptionSet options("[mpirun -np N] uel embed --run RUN [--data F.h5] --out E.h5");
  config.declare(options);
  options.add("run", &run, "run folder of `uel train`");
  options.add(
      "data",
      &data,
      "dataset to embed, every row (HDF5 from `uel prepare`); default: the run's evaluation "
      "queries (the test set in data.test_classes, or the data.val_fraction held out)");
  options.add(
      "out", &out, "output HDF5: /embeddings float32 [N, D], /labels and /indices int64 [N]");
  if (!parse_with_run(options, &run, args))
    return 0;
  UEL_CHECK_CONFIG(!out.empty(), "--out E.h5 is required");
  if (!data.empty()) {
    // The model takes images of its training set's size and channels; refuse others before work.
    const data::DatasetInfo trained = data::read_dataset_info(config.data.train);
    const data::DatasetInfo given = data::read_dataset_info(data);
    UEL_CHECK_DATA(
        given.height == trained.height && given.width == trained.width &&
            given.channels == trained.channels,
        "--data '{}' holds {}x{}x{} images but run '{}' was trained on {}x{}x{} images ('{}'); "
        "embed images of that size and channel count (`uel prepare image-list --resize` resizes)",
        data,
        given.height,
        given.width,
        given.channels,
        run,
        trained.height,
        trained.width,
        trained.channels,
        config.data.train);
  } else {
    UEL_CHECK_CONFIG(
        !config.data.test.empty() || config.data.val_fraction > 0,
        "run '{}' has no evaluation queries (no data.test, no data.val_fraction); give --data",
        run);
  }
  std::string checkpoint;
  auto trainer = open_run(config, run, options.to_ini(), &checkpoint);
  const eval::Evaluator& evaluator = trainer->evaluator();
  // The queries' dataset is the one the evaluator holds open; a given file is opened here.
  std::shared_ptr<const data::ImageDataset> dataset = evaluator.query_dataset();
  std::vector<int64_t> rows = evaluator.query_positions();
  if (data.empty()) {
    data = evaluator.query_path();
  } else {
    dataset = std::make_shared<const data::ImageDataset>(data, config.data.memory_mb << 20);
    rows.resize(dataset->size());
    std::iota(rows.begin(), rows.end(), 0);
  }
  at::Tensor features = evaluator.embed(trainer->model(), *dataset, rows).to(at::kCPU);
  // Shards are contiguous and in rank order, so the gather restores the rows' order.
  auto comm = comm::make_communicator(config.comm.backend, c10::Device(c10::kCPU));
  at::Tensor gathered = comm->all_gather_v(features);
  if (comm::world().rank == 0) {
    std::vector<int64_t> labels(rows.size());
    for (size_t i = 0; i < rows.size(); ++i)
      labels[i] = dataset->labels()[rows[i]];
    data::write_embeddings(out, gathered, labels, rows, data, checkpoint);
    log_info("wrote {} ({} x {} embeddings of {})", out, gathered.size(0), gathered.size(1), data);
  }
  return 0;
}

}  // namespace uel::cli
