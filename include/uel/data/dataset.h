#pragma once

// Image datasets in HDF5 (DESIGN.md §1): /images uint8 [N,H,W,C] (chunked), /labels int64 [N],
// attributes name, num_classes, class_names.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace uel::data {

struct DatasetInfo {
  std::string path;
  std::string name;
  int64_t size = 0;  // N
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
};

// Images of a dataset file, read-only. Validates the schema and every label on open. Small
// files are held in memory; larger ones are read on demand. Reads are safe from several threads.
class ImageDataset {
 public:
  // max_memory_bytes: files whose /images are at most this large are loaded whole.
  explicit ImageDataset(const std::string& path, int64_t max_memory_bytes = int64_t{4} << 30);
  ~ImageDataset();
  ImageDataset(const ImageDataset&) = delete;
  ImageDataset& operator=(const ImageDataset&) = delete;

  const DatasetInfo& info() const {
    return info_;
  }
  int64_t size() const {
    return info_.size;
  }
  const std::vector<int64_t>& labels() const {
    return labels_;
  }
  bool in_memory() const;

  // uint8 [indices.size(), H, W, C] in the order given.
  at::Tensor read(const std::vector<int64_t>& indices) const;

 private:
  struct Storage;
  DatasetInfo info_;
  std::vector<int64_t> labels_;
  std::unique_ptr<Storage> storage_;
};

// Reads only the attributes and shapes (for `uel info`); validates like ImageDataset.
DatasetInfo read_dataset_info(const std::string& path);

// Writes a dataset file atomically: rows go to a temporary file next to `path`, which replaces
// `path` only in commit(). Destroyed without commit(), it removes the temporary file, so an
// interrupted or failed conversion never leaves a partial file under the final name.
class DatasetWriter {
 public:
  DatasetWriter(
      std::string path,
      int64_t height,
      int64_t width,
      int64_t channels,
      std::string name,
      std::vector<std::string> class_names);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // images: uint8 [n,H,W,C] contiguous; labels: n values in [0, num_classes).
  void append(const at::Tensor& images, const std::vector<int64_t>& labels);
  int64_t size() const {
    return size_;
  }
  void commit();

 private:
  struct Handles;
  std::string path_;
  std::string tmp_path_;
  int64_t height_, width_, channels_;
  std::string name_;
  std::vector<std::string> class_names_;
  std::vector<int64_t> labels_;
  int64_t size_ = 0;
  std::unique_ptr<Handles> handles_;
};

// Writes embeddings ([N, D] float32), labels and the rows of the source dataset they embed to
// `path` atomically: /embeddings, /labels, /indices and attributes source (the dataset) and
// checkpoint.
void write_embeddings(
    const std::string& path,
    const at::Tensor& embeddings,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& indices,
    const std::string& source,
    const std::string& checkpoint);

// Rows [begin, end) of an embeddings file (`uel embed`): /embeddings float [N, D] as float32 and
// /labels int64 [N] when the file has them (undefined otherwise).
struct EmbeddingRows {
  at::Tensor embeddings;
  at::Tensor labels;
  int64_t total = 0;  // N
  int64_t begin = 0;
};
// This rank's shard_range of the rows.
EmbeddingRows read_embedding_shard(const std::string& path, int rank, int world);

// A clustering of an embeddings file (`uel cluster`), written atomically: /assignments int64 [N],
// /centroids float32 [k, D], attributes source, metric, k, inertia, iterations.
struct Clustering {
  at::Tensor assignments;
  at::Tensor centroids;
  std::string source;
  std::string metric;
  double inertia = 0;
  int64_t iterations = 0;
};
void write_clustering(const std::string& path, const Clustering& clustering);

// What an embeddings (`uel embed`) or clustering (`uel cluster`) file holds, without reading its
// arrays: `uel info`. kind: "embeddings", "clustering" or "dataset" (the file has /images; read
// those with ImageDataset). DataError for a file that is none of them.
struct FileSummary {
  std::string kind;
  std::vector<std::pair<std::string, std::string>> arrays;      // name, "N x D float32"
  std::vector<std::pair<std::string, std::string>> attributes;  // scalar ones, as text
};
FileSummary summarize_file(const std::string& path);

}  // namespace uel::data
