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
#include "uel/data/dataset.h"
#include "uel/eval/top_k.h"

namespace uel::cli {

// "3,17,42" -> {3, 17, 42}, each in [0, rows).
std::vector<int64_t> parse_rows(
    const std::string& spec, int64_t rows, const std::string& option, const std::string& data) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string item = spec.substr(start, comma - start);
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
    start = comma + 1;
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
  out.queries = queries;
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

void write_json_lines(const Nearest& nearest, std::FILE* out) {
  const eval::TopK& top = nearest.top;
  for (size_t i = 0; i < nearest.queries.size(); ++i) {
    for (int64_t j = 0; j < top.indices.size(1); ++j) {
      const int64_t index = top.indices[i][j].item<int64_t>();
      if (index < 0)
        break;  // fewer rows than k
      std::string label_fields;
      if (nearest.query_labels.defined()) {
        label_fields = fmt::format(
            R"(, "query_label": {}, "label": {})",
            nearest.query_labels[i].item<int64_t>(),
            top.labels[i][j].item<int64_t>());
      }
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

int run_neighbours(const Args& args) {
  Config config;
  std::string data, query;
  int64_t k = 10;
  int threads = 0;
  OptionSet options("[mpirun -np N] uel neighbours --data EMB.h5 --query I[,J...] [--k K]");
  options.add("data", &data, "embeddings file of `uel embed` (/embeddings, optional /labels)");
  options.add("query", &query, "rows of the file to query, comma-separated (e.g. 0,17)");
  options.add(
      "k", &k, "neighbours per query (the query itself excluded)", OptionSet::positive<int64_t>());
  options.add("threads", &threads, "LibTorch threads per rank (0: cores / local ranks)");
  config.declare_comm(options);
  options.add_validator([&] {
    UEL_CHECK_CONFIG(!data.empty() && !query.empty(), "--data EMB.h5 and --query are required");
  });
  if (!options.parse(args))
    return 0;

  const comm::WorldInfo& world = start_ranks(threads);
  comm::Watchdog::instance().set_timeout(config.comm.timeout_s);
  comm::set_check_order(config.comm.check_order);
  auto comm = comm::make_communicator(config.comm.backend, c10::Device(c10::kCPU));
  const data::EmbeddingRows rows = data::read_embedding_shard(data, world.rank, world.size);
  const Nearest nearest =
      nearest_rows(rows, parse_rows(query, rows.total, "query", data), k, *comm);
  if (world.rank == 0)
    write_json_lines(nearest, stdout);
  return 0;
}

}  // namespace uel::cli
