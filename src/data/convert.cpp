#include "uel/data/convert.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <ATen/ATen.h>

#include "uel/core/error.h"
#include "uel/core/logging.h"
#include "uel/data/dataset.h"
#include "uel/data/image_io.h"

namespace uel::data {

namespace fs = std::filesystem;

namespace {

// Reads a whole file, inflating it when it is gzipped (zlib passes plain files through).
std::vector<uint8_t> read_maybe_gzipped(const std::string& path) {
  UEL_CHECK_DATA(fs::is_regular_file(path), "input file '{}' does not exist", path);
  gzFile f = gzopen(path.c_str(), "rb");
  UEL_CHECK_DATA(f != nullptr, "cannot open '{}'", path);
  std::vector<uint8_t> out;
  std::array<uint8_t, 1 << 16> buffer;
  int n = 0;
  while ((n = gzread(f, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) {
    out.insert(out.end(), buffer.begin(), buffer.begin() + n);
  }
  int errnum = Z_OK;
  const std::string message = n < 0 ? gzerror(f, &errnum) : "";
  gzclose(f);
  UEL_CHECK_DATA(n >= 0, "cannot read '{}' (corrupt or truncated gzip?): {}", path, message);
  return out;
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// The first of `names` that exists in `dir`, also trying a .gz suffix.
std::string find_input(const std::string& dir, const std::vector<std::string>& names) {
  for (const auto& name : names) {
    for (const std::string& candidate : {name, name + ".gz"}) {
      const fs::path p = fs::path(dir) / candidate;
      if (fs::is_regular_file(p)) {
        return p.string();
      }
    }
  }
  UEL_CHECK_DATA(
      false,
      "no '{}' (or .gz) in '{}'; point --src at the folder holding the dataset files",
      names.front(),
      dir);
  return {};
}

struct Split {
  std::string name;   // "train" or "test"
  at::Tensor images;  // uint8 [N,H,W,C]
  std::vector<int64_t> labels;
};

std::vector<std::string> write_splits(
    const std::vector<Split>& splits,
    const std::string& out_dir,
    const std::string& dataset_name,
    const std::vector<std::string>& class_names) {
  std::vector<std::string> written;
  for (const auto& split : splits) {
    const std::string path = (fs::path(out_dir) / (split.name + ".h5")).string();
    DatasetWriter writer(
        path,
        split.images.size(1),
        split.images.size(2),
        split.images.size(3),
        dataset_name,
        class_names);
    writer.append(split.images, split.labels);
    writer.commit();
    log_info(
        "wrote {} ({} images {}x{}x{})",
        path,
        writer.size(),
        split.images.size(1),
        split.images.size(2),
        split.images.size(3));
    written.push_back(path);
  }
  return written;
}

void check_labels(
    const std::vector<int64_t>& labels, int64_t num_classes, const std::string& path) {
  for (size_t i = 0; i < labels.size(); ++i) {
    UEL_CHECK_DATA(
        labels[i] >= 0 && labels[i] < num_classes,
        "'{}': label {} of item {} is outside [0, {})",
        path,
        labels[i],
        i,
        num_classes);
  }
}

std::vector<std::string> read_name_lines(const fs::path& path) {
  std::vector<std::string> names;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
      line.pop_back();
    }
    if (!line.empty()) {
      names.push_back(line);
    }
  }
  return names;
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  const std::vector<uint8_t> bytes = read_maybe_gzipped(path);
  UEL_CHECK_DATA(bytes.size() >= 4, "'{}' is too short to be an IDX file", path);
  UEL_CHECK_DATA(
      bytes[0] == 0 && bytes[1] == 0,
      "'{}' is not an IDX file (bad magic {:02x}{:02x}{:02x}{:02x})",
      path,
      bytes[0],
      bytes[1],
      bytes[2],
      bytes[3]);
  UEL_CHECK_DATA(
      bytes[2] == 0x08,
      "'{}' holds IDX type 0x{:02x}; only unsigned bytes (0x08) are supported",
      path,
      bytes[2]);
  const int ndim = bytes[3];
  UEL_CHECK_DATA(ndim >= 1 && ndim <= 4, "'{}' declares {} dimensions", path, ndim);
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  UEL_CHECK_DATA(bytes.size() >= header, "'{}' is truncated inside its header", path);
  IdxArray out;
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    out.dims.push_back(read_be32(bytes.data() + 4 + 4 * d));
    count *= static_cast<size_t>(out.dims.back());
  }
  UEL_CHECK_DATA(
      bytes.size() - header == count,
      "'{}' should hold {} values after its header but holds {} (truncated or corrupt file)",
      path,
      count,
      bytes.size() - header);
  out.values.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return out;
}

std::vector<std::string> prepare_fashion_mnist(
    const std::string& src_dir, const std::string& out_dir) {
  UEL_CHECK_DATA(fs::is_directory(src_dir), "--src '{}' is not a folder", src_dir);
  static const std::vector<std::string> kClassNames = {
      "T-shirt/top",
      "Trouser",
      "Pullover",
      "Dress",
      "Coat",
      "Sandal",
      "Shirt",
      "Sneaker",
      "Bag",
      "Ankle boot"};
  std::vector<Split> splits;
  for (const auto& [split, prefix] :
       std::vector<std::pair<std::string, std::string>>{{"train", "train"}, {"test", "t10k"}}) {
    const std::string image_path = find_input(src_dir, {prefix + "-images-idx3-ubyte"});
    const std::string label_path = find_input(src_dir, {prefix + "-labels-idx1-ubyte"});
    IdxArray images = read_idx(image_path);
    IdxArray labels = read_idx(label_path);
    UEL_CHECK_DATA(images.dims.size() == 3, "'{}' should be a 3-d image array [N,H,W]", image_path);
    UEL_CHECK_DATA(labels.dims.size() == 1, "'{}' should be a 1-d label array", label_path);
    UEL_CHECK_DATA(
        images.dims[0] == labels.dims[0],
        "'{}' has {} images but '{}' has {} labels",
        image_path,
        images.dims[0],
        label_path,
        labels.dims[0]);
    UEL_CHECK_DATA(images.dims[0] > 0, "'{}' holds no images (empty dataset)", image_path);
    Split s{split, {}, std::vector<int64_t>(labels.values.begin(), labels.values.end())};
    check_labels(s.labels, static_cast<int64_t>(kClassNames.size()), label_path);
    s.images =
        at::from_blob(
            images.values.data(), {images.dims[0], images.dims[1], images.dims[2], 1}, at::kByte)
            .clone();
    splits.push_back(std::move(s));
  }
  return write_splits(splits, out_dir, "fashion-mnist", kClassNames);
}

std::vector<std::string> prepare_cifar(const std::string& src_dir, const std::string& out_dir) {
  UEL_CHECK_DATA(fs::is_directory(src_dir), "--src '{}' is not a folder", src_dir);
  // Accept the extracted archive's parent as well as the folder itself.
  std::string dir = src_dir;
  for (const char* sub : {"cifar-10-batches-bin", "cifar-100-binary"}) {
    if (fs::is_directory(fs::path(src_dir) / sub)) {
      dir = (fs::path(src_dir) / sub).string();
    }
  }
  const bool is_cifar10 = fs::exists(fs::path(dir) / "data_batch_1.bin");
  const bool is_cifar100 = fs::exists(fs::path(dir) / "train.bin");
  UEL_CHECK_DATA(
      is_cifar10 || is_cifar100,
      "'{}' holds neither CIFAR-10 (data_batch_1.bin) nor CIFAR-100 (train.bin) binary batches",
      dir);

  const int64_t label_bytes = is_cifar10 ? 1 : 2;  // CIFAR-100: coarse, then fine label
  const int64_t record = label_bytes + 3072;
  const int64_t num_classes = is_cifar10 ? 10 : 100;
  std::vector<std::pair<std::string, std::vector<std::string>>> layout;
  if (is_cifar10) {
    layout = {
        {"train",
         {"data_batch_1.bin",
          "data_batch_2.bin",
          "data_batch_3.bin",
          "data_batch_4.bin",
          "data_batch_5.bin"}},
        {"test", {"test_batch.bin"}}};
  } else {
    layout = {{"train", {"train.bin"}}, {"test", {"test.bin"}}};
  }

  std::vector<Split> splits;
  for (const auto& [split, files] : layout) {
    std::vector<uint8_t> bytes;
    for (const auto& file : files) {
      const std::string path = (fs::path(dir) / file).string();
      std::vector<uint8_t> part = read_maybe_gzipped(path);
      UEL_CHECK_DATA(
          !part.empty() && part.size() % record == 0,
          "'{}' has {} bytes, not a whole number of {}-byte CIFAR records (truncated file?)",
          path,
          part.size(),
          record);
      bytes.insert(bytes.end(), part.begin(), part.end());
    }
    const int64_t n = static_cast<int64_t>(bytes.size()) / record;
    at::Tensor raw = at::from_blob(bytes.data(), {n, record}, at::kByte);
    Split s{split, {}, {}};
    at::Tensor label_column = raw.select(1, label_bytes - 1).to(at::kLong).contiguous();
    s.labels.assign(label_column.data_ptr<int64_t>(), label_column.data_ptr<int64_t>() + n);
    check_labels(s.labels, num_classes, (fs::path(dir) / files.front()).string());
    // Records store planes R, G, B of 32x32; the schema wants HWC.
    s.images = raw.slice(1, label_bytes).reshape({n, 3, 32, 32}).permute({0, 2, 3, 1}).contiguous();
    splits.push_back(std::move(s));
  }

  std::vector<std::string> class_names =
      read_name_lines(fs::path(dir) / (is_cifar10 ? "batches.meta.txt" : "fine_label_names.txt"));
  if (static_cast<int64_t>(class_names.size()) != num_classes) {
    class_names.clear();
    for (int64_t c = 0; c < num_classes; ++c) {
      class_names.push_back(std::to_string(c));
    }
  }
  return write_splits(splits, out_dir, is_cifar10 ? "cifar10" : "cifar100", class_names);
}

std::string prepare_image_list(
    const std::string& root,
    const std::string& list,
    const std::string& out_file,
    int64_t resize,
    int channels,
    const std::string& name) {
  UEL_CHECK_CONFIG(resize > 0, "--resize must be positive, got {}", resize);
  UEL_CHECK_CONFIG(channels == 1 || channels == 3, "--channels must be 1 or 3, got {}", channels);
  UEL_CHECK_DATA(fs::is_directory(root), "--root '{}' is not a folder", root);
  std::ifstream in(list);
  UEL_CHECK_DATA(in.good(), "cannot open list file '{}'", list);

  // Parse and check the whole list before decoding anything.
  std::vector<std::pair<std::string, std::string>> entries;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::istringstream fields(line);
    std::string path, label, extra;
    fields >> path >> label;
    UEL_CHECK_DATA(
        !path.empty() && !label.empty() && !(fields >> extra),
        "{}:{}: expected `path label`, got '{}'",
        list,
        line_number,
        line);
    const fs::path full = fs::path(root) / path;
    UEL_CHECK_DATA(
        fs::is_regular_file(full),
        "{}:{}: image '{}' does not exist",
        list,
        line_number,
        full.string());
    entries.emplace_back(full.string(), label);
  }
  UEL_CHECK_DATA(!entries.empty(), "list file '{}' names no images (empty dataset)", list);

  // Numeric labels sort numerically, others lexicographically.
  const bool numeric = std::all_of(entries.begin(), entries.end(), [](const auto& e) {
    return !e.second.empty() && std::all_of(e.second.begin(), e.second.end(), ::isdigit);
  });
  auto less = [numeric](const std::string& a, const std::string& b) {
    if (numeric && a.size() != b.size()) {
      return a.size() < b.size();
    }
    return a < b;
  };
  std::map<std::string, int64_t, decltype(less)> class_ids(less);
  for (const auto& e : entries) {
    class_ids.emplace(e.second, 0);
  }
  std::vector<std::string> class_names;
  for (auto& [token, id] : class_ids) {
    id = static_cast<int64_t>(class_names.size());
    class_names.push_back(token);
  }

  DatasetWriter writer(out_file, resize, resize, channels, name, class_names);
  constexpr size_t kBlock = 256;
  for (size_t begin = 0; begin < entries.size(); begin += kBlock) {
    const size_t end = std::min(entries.size(), begin + kBlock);
    std::vector<at::Tensor> images(end - begin);
    std::vector<int64_t> labels(end - begin);
    for (size_t i = begin; i < end; ++i) {
      images[i - begin] = resize_image(decode_image(entries[i].first, channels), resize, resize);
      labels[i - begin] = class_ids.at(entries[i].second);
    }
    writer.append(at::stack(images), labels);
  }
  writer.commit();
  log_info(
      "wrote {} ({} images {}x{}x{}, {} classes)",
      out_file,
      writer.size(),
      resize,
      resize,
      channels,
      class_names.size());
  return out_file;
}

}  // namespace uel::data
