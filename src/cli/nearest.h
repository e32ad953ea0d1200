#pragma once

// The nearest rows of an embeddings file for chosen query rows, shared by `uel neighbours` (JSON
// lines) and `uel show` (the retrieval grid). The file stays sharded across ranks; the sharded
// top-k merge of the evaluation ranks the rows, so the result is the same on any number of ranks.

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "uel/comm/communicator.h"
#include "uel/data/dataset.h"
#include "uel/eval/top_k.h"

namespace uel::cli {

// "3,17,42" -> {3, 17, 42}, each in [0, rows); ConfigError naming `option` and `data` otherwise.
std::vector<int64_t> parse_rows(
    const std::string& spec, int64_t rows, const std::string& option, const std::string& data);

struct Nearest {
  std::vector<std::string> queries;  // each query as a JSON value: a row (17) or a file ("a.png")
  at::Tensor query_labels;           // int64 [nq]; undefined when not known
  eval::TopK top;                    // [nq, k]
  bool labelled = false;             // the rows have labels (top.labels holds them)
};

// Collective: `rows` is this rank's shard of the file (read_embedding_shard); each query row's
// neighbours exclude itself.
Nearest nearest_rows(
    const data::EmbeddingRows& rows,
    const std::vector<int64_t>& queries,
    int64_t k,
    comm::Communicator& comm);

// Collective: the neighbours of `vectors` [nq, D], the same on every rank, named `names`.
Nearest nearest_vectors(
    const at::Tensor& vectors,
    const std::vector<std::string>& names,
    const data::EmbeddingRows& rows,
    int64_t k,
    comm::Communicator& comm);

// `text` as a JSON string literal (quotes, backslashes and control characters escaped).
std::string json_string(const std::string& text);

// One JSON line per neighbour: query, rank, index, similarity (cosine), and query_label and label
// when the file is labelled.
void write_json_lines(const Nearest& nearest, std::FILE* out);

}  // namespace uel::cli
