// uel neighbours: the top-k rows of an embeddings file for chosen query rows, as JSON lines
// (nearest.h).

#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "commands.h"
#include "nearest.h"
#include "uel/cli/config.h"
#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/core/shard.h"
#include "uel/data/dataset.h"
#include "uel/data/image_io.h"
#include "uel/eval/evaluator.h"
#include "uel/eval/top_k.h"
#include "uel/train/trainer.h"

namespace uel::cli {

namespace {

// Comma-separated values of an option ("a.png,b.png").
std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    out.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

}  // namespace

// "3,17,42" -> {3, 17, 42}, each in [0, rows).
std::vector<int64_t> parse_rows(
    const std::string& spec, int64_t rows, const std::string& option, const std::string& data) {
  std::vector<int64_t> out;
  for (const std::string& item : split_list(spec)) {
    size_t used = 0;
    int64_t row = -1;
    try {
      row = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    UEL_CHECK_CONFIG(
        used == item.size() && !item.empty(),
        "--{}='{}': '{}' is not a row index; write e.g. --{} 0,17",
        option,
        spec,
        item,
        option);
    UEL_CHECK_CONFIG(
        row >= 0 && row < rows,
        "--{}: row {} is outside the {} rows of '{}' (0-{})",
        option,
        row,
        rows,
        data,
        rows - 1);
    out.push_back(row);
  }
  return out;
}

Nearest nearest_rows(
    const data::EmbeddingRows& rows,
    const std::vector<int64_t>& queries,
    int64_t k,
    comm::Communicator& comm) {
  const int64_t nq = static_cast<int64_t>(queries.size()), n = rows.embeddings.size(0);
  const bool labelled = rows.labels.defined();  // the same file on every rank
  // Each query row lives on one rank: it contributes the row (and label), the others zeros, so
  // a sum gives every rank the exact rows.
  at::Tensor vectors = at::zeros({nq, rows.embeddings.size(1)}, rows.embeddings.options());
  at::Tensor labels = at::zeros({nq}, at::kLong);
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t local = queries[i] - rows.begin;
    if (local >= 0 && local < n) {
      vectors[i].copy_(rows.embeddings[local]);
      if (labelled)
        labels[i] = rows.labels[local];
    }
  }
  comm.all_reduce(vectors, comm::ReduceOp::kSum);
  comm.all_reduce(labels, comm::ReduceOp::kSum);
  Nearest out;
  for (const int64_t row : queries)
    out.queries.push_back(std::to_string(row));
  out.labelled = labelled;
  if (labelled)
    out.query_labels = labels;
  out.top = eval::sharded_top_k(
      vectors,
      rows.embeddings,
      labelled ? rows.labels.to(at::kLong) : at::Tensor(),
      k,
      comm,
      at::tensor(queries, at::kLong));
  return out;
}

Nearest nearest_vectors(
    const at::Tensor& vectors,
    const std::vector<std::string>& names,
    const data::EmbeddingRows& rows,
    int64_t k,
    comm::Communicator& comm) {
  UEL_CHECK_DATA(
      vectors.size(1) == rows.embeddings.size(1),
      "the queries have {} dimensions and the embeddings {}; query embeddings of the same run "
      "and eval.layer",
      vectors.size(1),
      rows.embeddings.size(1));
  Nearest out;
  for (const std::string& name : names)
    out.queries.push_back(json_string(name));
  out.labelled = rows.labels.defined();
  out.top = eval::sharded_top_k(
      vectors,
      rows.embeddings,
      rows.labels.defined() ? rows.labels.to(at::kLong) : at::Tensor(),
      k,
      comm);
  return out;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const unsigned char c : text) {
    if (c == '"' || c == '\\')
      out += fmt::format("\\{}", static_cast<char>(c));
    else if (c < 0x20)
      out += fmt::format("\\u{:04x}", c);
    else
      out += static_cast<char>(c);
  }
  return out + "\"";
}

void write_json_lines(const Nearest& nearest, std::FILE* out) {
  const eval::TopK& top = nearest.top;
  for (size_t i = 0; i < nearest.queries.size(); ++i) {
    for (int64_t j = 0; j < top.indices.size(1); ++j) {
      const int64_t index = top.indices[i][j].item<int64_t>();
      if (index < 0)
        break;  // fewer rows than k
      std::string label_fields;
      if (nearest.query_labels.defined())
        label_fields =
            fmt::format(R"(, "query_label": {})", nearest.query_labels[i].item<int64_t>());
      if (nearest.labelled)
        label_fields += fmt::format(R"(, "label": {})", top.labels[i][j].item<int64_t>());
      std::fprintf(
          out,
          "%s\n",
          fmt::format(
              R"({{"query": {}, "rank": {}, "index": {}, "similarity": {:.7f}{}}})",
              nearest.queries[i],
              j + 1,
              index,
              top.values[i][j].item<double>(),
              label_fields)
              .c_str());
    }
  }
}

namespace {

// The images of `files` as uint8 [n, H, W, C] for a model trained on `info`'s images.
at::Tensor read_query_images(
    const std::vector<std::string>& files, const data::DatasetInfo& info, const std::string& run) {
  std::vector<at::Tensor> images;
  for (const std::string& file : files) {
    const at::Tensor image = data::decode_image(file, static_cast<int>(info.channels));
    UEL_CHECK_DATA(
        image.size(0) == info.height && image.size(1) == info.width,
        "--image '{}' is {}x{} but run '{}' was trained on {}x{} images; resize it to that size "
        "first (e.g. ImageMagick: convert '{}' -resize {}x{}! out.png)",
        file,
        image.size(0),
        image.size(1),
        run,
        info.height,
        info.width,
        file,
        info.width,
        info.height);
    images.push_back(image);
  }
  return at::stack(images);
}

// This rank's shard of the run's evaluation queries, embedded with its model and sharded as
// read_embedding_shard shards a file. Collective.
data::EmbeddingRows embed_queries(
    train::Trainer& trainer, const std::string& run, const comm::WorldInfo& world) {
  const eval::Evaluator& evaluator = trainer.evaluator();
  UEL_CHECK_CONFIG(
      !evaluator.query_path().empty(),
      "run '{}' has no evaluation queries (no data.test, no data.val_fraction); give --data",
      run);
  const std::vector<int64_t>& positions = evaluator.query_positions();
  const data::ImageDataset& dataset = *evaluator.query_dataset();
  data::EmbeddingRows rows;
  rows.embeddings = evaluator.embed(trainer.model(), dataset, positions).to(at::kCPU, at::kFloat);
  rows.total = static_cast<int64_t>(positions.size());
  rows.begin = shard_range(rows.total, world.rank, world.size).begin;
  rows.labels = evaluator.labels_of(dataset, positions).to(at::kCPU);
  return rows;
}

}  // namespace

int run_neighbours(const Args& args) {
  Config config;
  std::string data, query, run, image;
  int64_t k = 10;
  int threads = 0;
  OptionSet options(
      "[mpirun -np N] uel neighbours (--data EMB.h5 --query I[,J...] | --run RUN --image "
      "F[,G...] [--data EMB.h5]) [--k K]");
  options.add("data", &data, "embeddings file of `uel embed` (/embeddings, optional /labels)");
  options.add("query", &query, "rows of the file to query, comma-separated (e.g. 0,17)");
  options.add(
      "run",
      &run,
      "run folder of `uel train` whose model embeds --image; without --data the gallery is the "
      "run's evaluation queries (the test set in data.test_classes), embedded on the fly");
  options.add(
      "image", &image, "PNG or JPEG files to query, comma-separated, of the run's image size");
  options.add(
      "k", &k, "neighbours per query (the query itself excluded)", OptionSet::positive<int64_t>());
  options.add("threads", &threads, "LibTorch threads per rank (0: cores / local ranks)");
  config.declare_comm(options);
  options.add_validator([&] {
    UEL_CHECK_CONFIG(
        query.empty() != image.empty(), "give one of --query (rows of --data) and --image");
    UEL_CHECK_CONFIG(
        query.empty() || !data.empty(), "--query needs --data EMB.h5 (the file the rows are of)");
    UEL_CHECK_CONFIG(
        image.empty() || !run.empty(), "--image needs --run RUN (the model that embeds it)");
  });
  if (!options.parse(args))
    return 0;

  // --image: the run's model embeds the files (before MPI's collectives below).
  std::vector<std::string> files;
  Config run_config;
  std::unique_ptr<train::Trainer> trainer;
  at::Tensor vectors;
  if (!image.empty()) {
    files = split_list(image);
    std::string checkpoint;
    trainer = open_saved_run(run, &run_config, &checkpoint);
    const at::Tensor images =
        read_query_images(files, data::read_dataset_info(run_config.data.train), run);
    vectors = trainer->evaluator().embed_images(trainer->model(), images).to(at::kCPU, at::kFloat);
  }
  const comm::WorldInfo& world = start_ranks(threads);
  comm::Watchdog::instance().set_timeout(config.comm.timeout_s);
  comm::set_check_order(config.comm.check_order);
  auto comm = comm::make_communicator(config.comm.backend, c10::Device(c10::kCPU));
  const data::EmbeddingRows rows = !data.empty()
                                       ? data::read_embedding_shard(data, world.rank, world.size)
                                       : embed_queries(*trainer, run, world);
  const Nearest nearest =
      image.empty() ? nearest_rows(rows, parse_rows(query, rows.total, "query", data), k, *comm)
                    : nearest_vectors(vectors, files, rows, k, *comm);
  if (world.rank == 0)
    write_json_lines(nearest, stdout);
  return 0;
}

}  // namespace uel::cli
