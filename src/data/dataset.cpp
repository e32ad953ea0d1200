#include "uel/data/dataset.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "hdf5_util.h"
#include "uel/core/error.h"
#include "uel/core/shard.h"

namespace uel::data {

namespace fs = std::filesystem;
using h5::Handle;

namespace {

std::string default_name(const std::string& path) {
  return fs::path(path).stem().string();
}

// The file, its /images dataset, validated info and labels: what every reader needs.
struct OpenedDataset {
  Handle file;
  Handle images;
  DatasetInfo info;
  std::vector<int64_t> labels;
};

OpenedDataset open_dataset(const std::string& path) {
  h5::quiet_errors();
  UEL_CHECK_DATA(
      fs::exists(path), "dataset file '{}' does not exist; create it with `uel prepare ...`", path);
  UEL_CHECK_DATA(!fs::is_directory(path), "'{}' is a directory, expected an HDF5 file", path);
  OpenedDataset d;
  d.file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  UEL_CHECK_DATA(
      d.file.valid(),
      "'{}' is not a readable HDF5 file ({}); re-create it with `uel prepare ...`",
      path,
      h5::last_error());
  const hid_t file = d.file.get();
  UEL_CHECK_DATA(
      H5Lexists(file, "images", H5P_DEFAULT) > 0 && H5Lexists(file, "labels", H5P_DEFAULT) > 0,
      "'{}' lacks the /images or /labels dataset of the uel schema (DESIGN.md §1)",
      path);

  d.images = Handle(H5Dopen2(file, "images", H5P_DEFAULT), H5Dclose);
  UEL_CHECK_DATA(d.images.valid(), "cannot open '{}'/images: {}", path, h5::last_error());
  {
    Handle type(H5Dget_type(d.images.get()), H5Tclose);
    UEL_CHECK_DATA(
        H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == 1 &&
            H5Tget_sign(type.get()) == H5T_SGN_NONE,
        "'{}'/images must be uint8 pixels; convert the array to uint8 before writing it",
        path);
    Handle space(H5Dget_space(d.images.get()), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(space.get());
    UEL_CHECK_DATA(
        rank == 4,
        "'{}'/images must have 4 dimensions [N,H,W,C], found {}; add a channel axis for "
        "grayscale images",
        path,
        rank);
    hsize_t dims[4];
    H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    d.info.size = static_cast<int64_t>(dims[0]);
    d.info.height = static_cast<int64_t>(dims[1]);
    d.info.width = static_cast<int64_t>(dims[2]);
    d.info.channels = static_cast<int64_t>(dims[3]);
  }
  UEL_CHECK_DATA(d.info.size > 0, "'{}' holds no images (empty dataset)", path);
  UEL_CHECK_DATA(
      d.info.height > 0 && d.info.width > 0,
      "'{}'/images has an empty image size {}x{}",
      path,
      d.info.height,
      d.info.width);
  UEL_CHECK_DATA(
      d.info.channels == 1 || d.info.channels == 3,
      "'{}'/images has {} channels; uel reads 1 (grayscale) or 3 (RGB)",
      path,
      d.info.channels);

  {
    Handle labels(H5Dopen2(file, "labels", H5P_DEFAULT), H5Dclose);
    UEL_CHECK_DATA(labels.valid(), "cannot open '{}'/labels: {}", path, h5::last_error());
    Handle type(H5Dget_type(labels.get()), H5Tclose);
    UEL_CHECK_DATA(
        H5Tget_class(type.get()) == H5T_INTEGER, "'{}'/labels must be integers (int64)", path);
    Handle space(H5Dget_space(labels.get()), H5Sclose);
    hsize_t n = 0;
    UEL_CHECK_DATA(
        H5Sget_simple_extent_ndims(space.get()) == 1, "'{}'/labels must be one-dimensional", path);
    H5Sget_simple_extent_dims(space.get(), &n, nullptr);
    UEL_CHECK_DATA(
        static_cast<int64_t>(n) == d.info.size,
        "'{}' has {} labels for {} images",
        path,
        n,
        d.info.size);
    d.labels.resize(n);
    UEL_CHECK_DATA(
        H5Dread(labels.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, d.labels.data()) >=
            0,
        "cannot read '{}'/labels (truncated or corrupt file?): {}",
        path,
        h5::last_error());
  }

  const int64_t max_label = *std::max_element(d.labels.begin(), d.labels.end());
  const int64_t min_label = *std::min_element(d.labels.begin(), d.labels.end());
  d.info.path = path;
  d.info.name = h5::has_attribute(file, "name") ? h5::read_string_attribute(file, "name")
                                                : default_name(path);
  d.info.num_classes = h5::has_attribute(file, "num_classes")
                           ? h5::read_int_attribute(file, "num_classes")
                           : max_label + 1;
  UEL_CHECK_DATA(
      min_label >= 0 && max_label < d.info.num_classes,
      "'{}' has labels in [{}, {}], outside [0, num_classes={})",
      path,
      min_label,
      max_label,
      d.info.num_classes);
  if (h5::has_attribute(file, "class_names")) {
    d.info.class_names = h5::read_string_array_attribute(file, "class_names");
    UEL_CHECK_DATA(
        static_cast<int64_t>(d.info.class_names.size()) == d.info.num_classes,
        "'{}' names {} classes but num_classes is {}",
        path,
        d.info.class_names.size(),
        d.info.num_classes);
  } else {
    for (int64_t c = 0; c < d.info.num_classes; ++c) {
      d.info.class_names.push_back(std::to_string(c));
    }
  }
  return d;
}

// Reads rows `sorted_unique` (ascending) of /images into `out` ([rows, H, W, C] uint8).
void read_rows(
    hid_t images,
    const DatasetInfo& info,
    const std::vector<int64_t>& sorted_unique,
    uint8_t* out) {
  Handle file_space(H5Dget_space(images), H5Sclose);
  H5Sselect_none(file_space.get());
  // One hyperslab per run of consecutive rows keeps the selection small for sorted batches.
  size_t i = 0;
  while (i < sorted_unique.size()) {
    size_t j = i + 1;
    while (j < sorted_unique.size() && sorted_unique[j] == sorted_unique[j - 1] + 1) {
      ++j;
    }
    const hsize_t start[4] = {static_cast<hsize_t>(sorted_unique[i]), 0, 0, 0};
    const hsize_t count[4] = {
        static_cast<hsize_t>(j - i),
        static_cast<hsize_t>(info.height),
        static_cast<hsize_t>(info.width),
        static_cast<hsize_t>(info.channels)};
    H5Sselect_hyperslab(file_space.get(), H5S_SELECT_OR, start, nullptr, count, nullptr);
    i = j;
  }
  // The rows' own shape: against a flat memory space HDF5 maps chunked data element by element
  // (reading Fashion-MNIST's 60,000 images took about 2 s, most of a short command's start).
  const hsize_t mem_dims[4] = {
      static_cast<hsize_t>(sorted_unique.size()),
      static_cast<hsize_t>(info.height),
      static_cast<hsize_t>(info.width),
      static_cast<hsize_t>(info.channels)};
  Handle mem_space(H5Screate_simple(4, mem_dims, nullptr), H5Sclose);
  UEL_CHECK_DATA(
      H5Dread(images, H5T_NATIVE_UINT8, mem_space.get(), file_space.get(), H5P_DEFAULT, out) >= 0,
      "cannot read images from '{}' (truncated or corrupt file?): {}",
      info.path,
      h5::last_error());
}

}  // namespace

struct ImageDataset::Storage {
  Handle file;
  Handle images;
  at::Tensor memory;  // [N,H,W,C] when in memory, else undefined
};

ImageDataset::ImageDataset(const std::string& path, int64_t max_memory_bytes) {
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  OpenedDataset d = open_dataset(path);
  info_ = std::move(d.info);
  labels_ = std::move(d.labels);
  storage_ = std::make_unique<Storage>();
  const int64_t bytes = info_.size * info_.height * info_.width * info_.channels;
  if (bytes <= max_memory_bytes) {
    storage_->memory =
        at::empty({info_.size, info_.height, info_.width, info_.channels}, at::kByte);
    std::vector<int64_t> all(info_.size);
    for (int64_t i = 0; i < info_.size; ++i) {
      all[i] = i;
    }
    read_rows(d.images.get(), info_, all, storage_->memory.data_ptr<uint8_t>());
  } else {
    storage_->file = std::move(d.file);
    storage_->images = std::move(d.images);
  }
}

ImageDataset::~ImageDataset() {
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  storage_.reset();
}

bool ImageDataset::in_memory() const {
  return storage_->memory.defined();
}

at::Tensor ImageDataset::read(const std::vector<int64_t>& indices) const {
  for (int64_t i : indices) {
    UEL_CHECK(
        i >= 0 && i < info_.size,
        "index {} outside dataset '{}' of size {}",
        i,
        info_.path,
        info_.size);
  }
  const int64_t n = static_cast<int64_t>(indices.size());
  if (in_memory()) {
    return storage_->memory.index_select(0, at::tensor(at::ArrayRef<int64_t>(indices), at::kLong));
  }
  std::vector<int64_t> sorted(indices);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  const int64_t row = info_.height * info_.width * info_.channels;
  at::Tensor rows = at::empty({static_cast<int64_t>(sorted.size()), row}, at::kByte);
  {
    std::lock_guard<std::recursive_mutex> lock(h5::mutex());
    read_rows(storage_->images.get(), info_, sorted, rows.data_ptr<uint8_t>());
  }
  std::vector<int64_t> position(n);
  for (int64_t k = 0; k < n; ++k) {
    position[k] = std::lower_bound(sorted.begin(), sorted.end(), indices[k]) - sorted.begin();
  }
  return rows.index_select(0, at::tensor(at::ArrayRef<int64_t>(position), at::kLong))
      .view({n, info_.height, info_.width, info_.channels});
}

DatasetInfo read_dataset_info(const std::string& path) {
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  return open_dataset(path).info;
}

struct DatasetWriter::Handles {
  Handle file;
  Handle images;
};

DatasetWriter::DatasetWriter(
    std::string path,
    int64_t height,
    int64_t width,
    int64_t channels,
    std::string name,
    std::vector<std::string> class_names)
    : path_(std::move(path)),
      height_(height),
      width_(width),
      channels_(channels),
      name_(std::move(name)),
      class_names_(std::move(class_names)) {
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  h5::quiet_errors();
  UEL_CHECK(height > 0 && width > 0 && (channels == 1 || channels == 3), "bad image shape");
  UEL_CHECK(!class_names_.empty(), "a dataset needs at least one class");
  const fs::path parent = fs::path(path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    UEL_CHECK_DATA(!ec, "cannot create output folder '{}': {}", parent.string(), ec.message());
  }
  tmp_path_ = path_ + ".tmp." + std::to_string(getpid());
  handles_ = std::make_unique<Handles>();
  handles_->file =
      Handle(H5Fcreate(tmp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  UEL_CHECK_DATA(
      handles_->file.valid(),
      "cannot create '{}' (is the folder writable?): {}",
      tmp_path_,
      h5::last_error());

  // Chunks of about 256 KiB of whole images: cheap random row reads, few chunks.
  const int64_t row_bytes = height * width * channels;
  const hsize_t chunk_rows = static_cast<hsize_t>(std::max<int64_t>(1, (256 << 10) / row_bytes));
  const hsize_t dims[4] = {0, hsize_t(height), hsize_t(width), hsize_t(channels)};
  const hsize_t max_dims[4] = {H5S_UNLIMITED, hsize_t(height), hsize_t(width), hsize_t(channels)};
  const hsize_t chunk[4] = {chunk_rows, hsize_t(height), hsize_t(width), hsize_t(channels)};
  Handle space(H5Screate_simple(4, dims, max_dims), H5Sclose);
  Handle props(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_chunk(props.get(), 4, chunk);
  handles_->images = Handle(
      H5Dcreate2(
          handles_->file.get(),
          "images",
          H5T_STD_U8LE,
          space.get(),
          H5P_DEFAULT,
          props.get(),
          H5P_DEFAULT),
      H5Dclose);
  UEL_CHECK_DATA(
      handles_->images.valid(), "cannot create /images in '{}': {}", tmp_path_, h5::last_error());
}

DatasetWriter::~DatasetWriter() {
  if (handles_) {
    std::lock_guard<std::recursive_mutex> lock(h5::mutex());
    handles_.reset();
    std::error_code ec;
    fs::remove(tmp_path_, ec);
  }
}

void DatasetWriter::append(const at::Tensor& images, const std::vector<int64_t>& labels) {
  UEL_CHECK(handles_, "DatasetWriter::append after commit");
  UEL_CHECK(
      images.scalar_type() == at::kByte && images.dim() == 4 && images.size(1) == height_ &&
          images.size(2) == width_ && images.size(3) == channels_,
      "append expects uint8 [n,{},{},{}], got {}",
      height_,
      width_,
      channels_,
      c10::str(images.sizes()));
  UEL_CHECK(
      images.size(0) == static_cast<int64_t>(labels.size()),
      "{} images but {} labels",
      images.size(0),
      labels.size());
  const auto num_classes = static_cast<int64_t>(class_names_.size());
  for (int64_t label : labels) {
    UEL_CHECK_DATA(
        label >= 0 && label < num_classes,
        "label {} outside [0, {}) while writing '{}'",
        label,
        num_classes,
        path_);
  }
  const int64_t n = images.size(0);
  if (n == 0) {
    return;
  }
  at::Tensor contiguous = images.contiguous();
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  const hid_t dset = handles_->images.get();
  const hsize_t new_dims[4] = {
      hsize_t(size_ + n), hsize_t(height_), hsize_t(width_), hsize_t(channels_)};
  UEL_CHECK_DATA(H5Dset_extent(dset, new_dims) >= 0, "cannot grow /images: {}", h5::last_error());
  Handle file_space(H5Dget_space(dset), H5Sclose);
  const hsize_t start[4] = {hsize_t(size_), 0, 0, 0};
  const hsize_t count[4] = {hsize_t(n), hsize_t(height_), hsize_t(width_), hsize_t(channels_)};
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
  Handle mem_space(H5Screate_simple(4, count, nullptr), H5Sclose);
  UEL_CHECK_DATA(
      H5Dwrite(
          dset,
          H5T_NATIVE_UINT8,
          mem_space.get(),
          file_space.get(),
          H5P_DEFAULT,
          contiguous.data_ptr<uint8_t>()) >= 0,
      "cannot write images to '{}' (disk full?): {}",
      tmp_path_,
      h5::last_error());
  labels_.insert(labels_.end(), labels.begin(), labels.end());
  size_ += n;
}

void DatasetWriter::commit() {
  UEL_CHECK(handles_, "DatasetWriter::commit called twice");
  UEL_CHECK_DATA(size_ > 0, "refusing to write '{}': the dataset is empty", path_);
  {
    std::lock_guard<std::recursive_mutex> lock(h5::mutex());
    const hid_t file = handles_->file.get();
    const hsize_t dims[1] = {hsize_t(size_)};
    Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
    Handle labels(
        H5Dcreate2(
            file, "labels", H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
        H5Dclose);
    UEL_CHECK_DATA(
        labels.valid() &&
            H5Dwrite(
                labels.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels_.data()) >= 0,
        "cannot write /labels to '{}': {}",
        tmp_path_,
        h5::last_error());
    h5::write_string_attribute(file, "name", name_);
    h5::write_int_attribute(file, "num_classes", static_cast<int64_t>(class_names_.size()));
    h5::write_string_array_attribute(file, "class_names", class_names_);
    labels.reset();
    handles_->images.reset();
    UEL_CHECK_DATA(
        handles_->file.close() >= 0, "cannot finish '{}': {}", tmp_path_, h5::last_error());
  }
  std::error_code ec;
  fs::rename(tmp_path_, path_, ec);
  UEL_CHECK_DATA(!ec, "cannot move '{}' to '{}': {}", tmp_path_, path_, ec.message());
  handles_.reset();
}

void write_embeddings(
    const std::string& path,
    const at::Tensor& embeddings,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& indices,
    const std::string& source,
    const std::string& checkpoint) {
  UEL_CHECK(
      embeddings.dim() == 2 && embeddings.size(0) == static_cast<int64_t>(labels.size()) &&
          labels.size() == indices.size(),
      "embeddings, labels and indices disagree");
  at::Tensor values = embeddings.to(at::kCPU, at::kFloat).contiguous();
  h5::write_file_atomically(path, [&](hid_t file) {
    h5::write_array(
        file,
        "embeddings",
        H5T_IEEE_F32LE,
        H5T_NATIVE_FLOAT,
        {hsize_t(values.size(0)), hsize_t(values.size(1))},
        values.data_ptr<float>());
    h5::write_array(
        file, "labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {labels.size()}, labels.data());
    h5::write_array(
        file, "indices", H5T_STD_I64LE, H5T_NATIVE_INT64, {indices.size()}, indices.data());
    h5::write_string_attribute(file, "source", source);
    h5::write_string_attribute(file, "checkpoint", checkpoint);
  });
}

namespace {

// Rows [begin, end) of the 1-D or 2-D dataset `name`, read as `memory_type` into `target`.
void read_rows(
    hid_t file,
    const std::string& path,
    const char* name,
    int64_t begin,
    int64_t end,
    hid_t memory_type,
    at::Tensor& target) {
  Handle dset(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  UEL_CHECK_DATA(dset.valid(), "cannot open '{}'/{}: {}", path, name, h5::last_error());
  Handle space(H5Dget_space(dset.get()), H5Sclose);
  const int rank = target.dim();
  std::vector<hsize_t> start(rank, 0), count(target.sizes().begin(), target.sizes().end());
  start[0] = hsize_t(begin);
  H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  Handle memory(H5Screate_simple(rank, count.data(), nullptr), H5Sclose);
  UEL_CHECK_DATA(
      end == begin ||
          H5Dread(
              dset.get(), memory_type, memory.get(), space.get(), H5P_DEFAULT, target.data_ptr()) >=
              0,
      "cannot read rows of '{}'/{}: {}",
      path,
      name,
      h5::last_error());
}

}  // namespace

EmbeddingRows read_embedding_shard(const std::string& path, int rank, int world) {
  h5::quiet_errors();
  UEL_CHECK_DATA(
      fs::is_regular_file(path),
      "embeddings file '{}' does not exist; write one with `uel embed`",
      path);
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  UEL_CHECK_DATA(file.valid(), "'{}' is not a readable HDF5 file: {}", path, h5::last_error());
  UEL_CHECK_DATA(
      H5Lexists(file.get(), "embeddings", H5P_DEFAULT) > 0,
      "'{}' has no /embeddings dataset; is it a `uel embed --out` file?",
      path);
  hsize_t dims[2] = {0, 0};
  {
    Handle dset(H5Dopen2(file.get(), "embeddings", H5P_DEFAULT), H5Dclose);
    Handle space(H5Dget_space(dset.get()), H5Sclose);
    UEL_CHECK_DATA(
        H5Sget_simple_extent_ndims(space.get()) == 2,
        "'{}'/embeddings must be a 2-D [N, D] array",
        path);
    H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  }
  EmbeddingRows out;
  out.total = static_cast<int64_t>(dims[0]);
  const ShardRange shard = shard_range(out.total, rank, world);
  out.begin = shard.begin;
  out.embeddings = at::empty({shard.size(), static_cast<int64_t>(dims[1])}, at::kFloat);
  read_rows(
      file.get(), path, "embeddings", shard.begin, shard.end, H5T_NATIVE_FLOAT, out.embeddings);
  if (H5Lexists(file.get(), "labels", H5P_DEFAULT) > 0) {
    out.labels = at::empty({shard.size()}, at::kLong);
    read_rows(file.get(), path, "labels", shard.begin, shard.end, H5T_NATIVE_INT64, out.labels);
  }
  return out;
}

FileSummary summarize_file(const std::string& path) {
  h5::quiet_errors();
  UEL_CHECK_DATA(fs::is_regular_file(path), "'{}' does not exist or is not a file", path);
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  UEL_CHECK_DATA(file.valid(), "'{}' is not a readable HDF5 file: {}", path, h5::last_error());
  const auto has = [&](const char* name) { return H5Lexists(file.get(), name, H5P_DEFAULT) > 0; };
  FileSummary out;
  std::vector<const char*> arrays;
  if (has("images")) {
    out.kind = "dataset";
  } else if (has("embeddings")) {
    out.kind = "embeddings";
    arrays = {"embeddings", "labels", "indices"};
  } else if (has("assignments")) {
    out.kind = "clustering";
    arrays = {"assignments", "centroids"};
  }
  UEL_CHECK_DATA(
      !out.kind.empty(),
      "'{}' is not a uel file: no /images (uel prepare), /embeddings (uel embed) or "
      "/assignments (uel cluster)",
      path);
  for (const char* name : arrays) {
    if (!has(name))
      continue;
    Handle dset(H5Dopen2(file.get(), name, H5P_DEFAULT), H5Dclose);
    Handle space(H5Dget_space(dset.get()), H5Sclose);
    Handle type(H5Dget_type(dset.get()), H5Tclose);
    hsize_t dims[H5S_MAX_RANK] = {};
    const int rank = H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    std::vector<std::string> sizes;
    for (int i = 0; i < rank; ++i)
      sizes.push_back(std::to_string(dims[i]));
    const bool is_float = H5Tget_class(type.get()) == H5T_FLOAT;
    out.arrays.emplace_back(
        name,
        fmt::format(
            "{} {}{}",
            fmt::join(sizes, " x "),
            is_float ? "float" : "int",
            8 * H5Tget_size(type.get())));
  }
  for (const char* name : {"source", "checkpoint", "metric", "k", "inertia", "iterations"}) {
    if (!h5::has_attribute(file.get(), name))
      continue;
    Handle attribute(H5Aopen(file.get(), name, H5P_DEFAULT), H5Aclose);
    Handle type(H5Aget_type(attribute.get()), H5Tclose);
    const H5T_class_t type_class = H5Tget_class(type.get());
    out.attributes.emplace_back(
        name,
        type_class == H5T_STRING ? h5::read_string_attribute(file.get(), name)
        : type_class == H5T_INTEGER
            ? std::to_string(h5::read_int_attribute(file.get(), name))
            : fmt::format("{:.6g}", h5::read_double_attribute(file.get(), name)));
  }
  return out;
}

void write_clustering(const std::string& path, const Clustering& clustering) {
  const at::Tensor assignments = clustering.assignments.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor centroids = clustering.centroids.to(at::kCPU, at::kFloat).contiguous();
  h5::write_file_atomically(path, [&](hid_t file) {
    h5::write_array(
        file,
        "assignments",
        H5T_STD_I64LE,
        H5T_NATIVE_INT64,
        {hsize_t(assignments.numel())},
        assignments.data_ptr<int64_t>());
    h5::write_array(
        file,
        "centroids",
        H5T_IEEE_F32LE,
        H5T_NATIVE_FLOAT,
        {hsize_t(centroids.size(0)), hsize_t(centroids.size(1))},
        centroids.data_ptr<float>());
    h5::write_string_attribute(file, "source", clustering.source);
    h5::write_string_attribute(file, "metric", clustering.metric);
    h5::write_int_attribute(file, "k", centroids.size(0));
    h5::write_double_attribute(file, "inertia", clustering.inertia);
    h5::write_int_attribute(file, "iterations", clustering.iterations);
  });
}

}  // namespace uel::data
