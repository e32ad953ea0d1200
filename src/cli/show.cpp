// `uel show (--run RUN | --data EMB.h5) --out DIR`: what an embedding looks like. uel computes
// what needs the embedding (the queries' nearest rows, leave-one-out weighted kNN per class, on
// any number of ranks) and tools/uel_show.py draws it with Debian's python3-matplotlib: a
// retrieval grid, 2-D maps of the embedding and of the pixels, per-class accuracy, show.md.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.h"
#include "nearest.h"
#include "uel/cli/config.h"
#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/data/dataset.h"
#include "uel/eval/knn.h"

namespace uel::cli {

namespace fs = std::filesystem;

namespace {

// `count` distinct rows of [0, rows) drawn with `seed` (a partial Fisher-Yates shuffle on the
// raw 64-bit engine, so every platform draws the same rows), ascending.
std::vector<int64_t> draw_rows(int64_t count, int64_t rows, uint64_t seed) {
  std::vector<int64_t> all(rows);
  for (int64_t i = 0; i < rows; ++i)
    all[i] = i;
  std::mt19937_64 engine(seed);
  count = std::min(count, rows);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = i + static_cast<int64_t>(engine() % static_cast<uint64_t>(rows - i));
    std::swap(all[i], all[j]);
  }
  all.resize(count);
  std::sort(all.begin(), all.end());
  return all;
}

// The voters of the leave-one-out kNN: every other row when the file has fewer than knn_k + 1.
int64_t effective_k(const eval::KnnConfig& knn, int64_t rows) {
  return std::min(knn.k, rows - 1);
}

// Leave-one-out weighted kNN within the file: every row votes with its k nearest other rows.
// Returns the confusion matrix [classes, classes] (true class, predicted class). Collective.
at::Tensor leave_one_out_confusion(
    const data::EmbeddingRows& rows,
    int64_t classes,
    const eval::KnnConfig& knn,
    comm::Communicator& comm) {
  const at::Tensor all = comm.all_gather_v(rows.embeddings);
  const at::Tensor all_labels = comm.all_gather_v(rows.labels);
  const int64_t k = effective_k(knn, rows.total);
  at::Tensor confusion = at::zeros({classes, classes}, at::kLong);
  constexpr int64_t kChunk = 1024;  // queries per top-k: bounds the [chunk, n_r] similarities
  for (int64_t begin = 0; begin < rows.total; begin += kChunk) {
    const int64_t end = std::min(begin + kChunk, rows.total);
    const eval::TopK top = eval::sharded_top_k(
        all.slice(0, begin, end),
        rows.embeddings,
        rows.labels,
        k,
        comm,
        at::arange(begin, end, at::kLong));
    const at::Tensor predicted = eval::knn_votes(top, classes, knn.tau).argmax(1);
    const at::Tensor cells = all_labels.slice(0, begin, end) * classes + predicted;
    confusion.view({-1}).index_add_(0, cells, at::ones_like(cells));
  }
  return confusion;
}

}  // namespace

int run_show(const Args& args) {
  Config config;
  std::string run, data, images, out, query, map = "tsne";
  int64_t queries = 8, k = 8, points = 2000;
  eval::KnnConfig knn;
  uint64_t seed = 0;
  int threads = 0;
  OptionSet options("[mpirun -np N] uel show (--run RUN | --data EMB.h5) --out DIR");
  options.add(
      "run",
      &run,
      "run folder of `uel train`: its evaluation queries (the test set in data.test_classes) are "
      "embedded with its newest checkpoint into DIR/embeddings.h5 and shown");
  options.add("data", &data, "an embeddings file of `uel embed` instead of --run");
  options.add(
      "images",
      &images,
      "dataset holding the embedded images (default: the embeddings file's source attribute)");
  options.add("out", &out, "folder for the PNGs and show.md (created)");
  options.add("queries", &queries, "query rows drawn with --seed", OptionSet::positive<int64_t>());
  options.add("query", &query, "query rows instead of a draw, comma-separated (e.g. 0,17)");
  options.add("k", &k, "neighbours per query in the grid", OptionSet::positive<int64_t>());
  options.add(
      "knn_k", &knn.k, "neighbours voting in the per-class kNN", OptionSet::positive<int64_t>());
  options.add("knn_tau", &knn.tau, "temperature of the kNN votes", OptionSet::positive<double>());
  options.add_choice(
      "map", &map, {"tsne", "pca"}, "2-D projection of the maps (pca is the fast one)");
  options.add("points", &points, "rows drawn on each map", OptionSet::positive<int64_t>());
  options.add("seed", &seed, "seed of the query draw and of the maps");
  options.add("threads", &threads, "LibTorch threads per rank (0: cores / local ranks)");
  config.declare_comm(options);
  options.add_validator([&] {
    UEL_CHECK_CONFIG(
        run.empty() != data.empty(), "give one of --run RUN and --data EMB.h5 (not both)");
    UEL_CHECK_CONFIG(!out.empty(), "--out DIR is required (the folder for the pictures)");
  });
  if (!options.parse(args))
    return 0;

  std::error_code ec;
  fs::create_directories(out, ec);  // every rank: a shared folder may already be there
  UEL_CHECK_DATA(
      fs::is_directory(out),
      "cannot create --out '{}': {}",
      out,
      ec ? ec.message() : "not a folder");
  if (!run.empty()) {
    data = (fs::path(out) / "embeddings.h5").string();
    // Rank 0 writes the file; the others wait at the first collective below.
    const int embedded = run_embed({"--run", run, "--out", data});
    if (embedded != 0)
      return embedded;
  }
  const comm::WorldInfo& world = start_ranks(threads);
  comm::Watchdog::instance().set_timeout(config.comm.timeout_s);
  comm::set_check_order(config.comm.check_order);
  auto comm = comm::make_communicator(config.comm.backend, c10::Device(c10::kCPU));
  comm->barrier();  // embeddings.h5 is complete
  const data::EmbeddingRows rows = data::read_embedding_shard(data, world.rank, world.size);
  UEL_CHECK_DATA(rows.total >= 2, "'{}' holds {} rows; show needs at least 2", data, rows.total);
  const std::vector<int64_t> chosen = query.empty() ? draw_rows(queries, rows.total, seed)
                                                    : parse_rows(query, rows.total, "query", data);
  const Nearest nearest = nearest_rows(rows, chosen, k, *comm);
  at::Tensor confusion;
  if (rows.labels.defined()) {
    at::Tensor top_label = at::full({1}, -1, at::kLong);
    if (rows.labels.numel() > 0)
      top_label = rows.labels.max().view({1});
    comm->all_reduce(top_label, comm::ReduceOp::kMax);
    confusion = leave_one_out_confusion(rows, top_label.item<int64_t>() + 1, knn, *comm);
  }
  if (world.rank != 0)
    return 0;

  const fs::path neighbours = fs::path(out) / "neighbours.jsonl";
  std::FILE* file = std::fopen(neighbours.c_str(), "w");
  UEL_CHECK_DATA(file != nullptr, "cannot write '{}'", neighbours.string());
  write_json_lines(nearest, file);
  UEL_CHECK_DATA(std::fclose(file) == 0, "cannot write '{}'", neighbours.string());
  std::vector<std::string> script_args = {
      "--out",
      out,
      "--embeddings",
      data,
      "--neighbours",
      neighbours.string(),
      "--map",
      map,
      "--points",
      std::to_string(points),
      "--seed",
      std::to_string(seed)};
  if (!images.empty())
    script_args.insert(script_args.end(), {"--images", images});
  if (confusion.defined()) {
    const fs::path knn_path = fs::path(out) / "knn.json";
    file = std::fopen(knn_path.c_str(), "w");
    UEL_CHECK_DATA(file != nullptr, "cannot write '{}'", knn_path.string());
    std::fprintf(
        file,
        R"({"k": %lld, "tau": %.17g, "confusion": [)",
        static_cast<long long>(effective_k(knn, rows.total)),
        knn.tau);
    for (int64_t i = 0; i < confusion.size(0); ++i) {
      const at::Tensor row = confusion[i].contiguous();
      const int64_t* p = row.data_ptr<int64_t>();
      std::fprintf(
          file,
          "%s[%s]",
          i == 0 ? "" : ", ",
          fmt::format("{}", fmt::join(p, p + row.numel(), ", ")).c_str());
    }
    std::fprintf(file, "]}\n");
    UEL_CHECK_DATA(std::fclose(file) == 0, "cannot write '{}'", knn_path.string());
    script_args.insert(script_args.end(), {"--knn", knn_path.string()});
  }
  log_info(
      "drawing {} queries x {} neighbours and the {} maps into {}", chosen.size(), k, map, out);
  return run_script("UEL_SHOW_SCRIPT", UEL_SHOW_SCRIPT, script_args);
}

}  // namespace uel::cli
