#pragma once

// Converters from the public dataset formats to uel's HDF5 schema (`uel prepare ...`). Each one
// reads and validates all of its input before it writes, and writes atomically.

#include <cstdint>
#include <string>
#include <vector>

namespace uel::data {

// An IDX array (the MNIST format): unsigned bytes with its dimensions. gzip is detected.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> values;
};
IdxArray read_idx(const std::string& path);

// IDX files (train-/t10k-{images-idx3,labels-idx1}-ubyte, gzipped or not) in `src_dir` ->
// `out_dir`/train.h5 and `out_dir`/test.h5. Returns the written paths.
std::vector<std::string> prepare_fashion_mnist(
    const std::string& src_dir, const std::string& out_dir);

// CIFAR-10 (data_batch_1..5.bin, test_batch.bin) or CIFAR-100 (train.bin, test.bin; fine labels)
// binary batches in `src_dir` or its cifar-*-batches-bin / cifar-100-binary subfolder.
std::vector<std::string> prepare_cifar(const std::string& src_dir, const std::string& out_dir);

// A list of `path label` lines (paths relative to `root`); images decoded and resized to
// resize x resize; labels (any token) mapped to 0..C-1 in sorted order, the tokens kept as
// class names.
std::string prepare_image_list(
    const std::string& root,
    const std::string& list,
    const std::string& out_file,
    int64_t resize,
    int channels,
    const std::string& name);

}  // namespace uel::data
