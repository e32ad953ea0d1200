#pragma once

// Helpers shared by the tests: scratch folders and writers for the input formats the converters
// read (IDX, CIFAR binary, PNG, JPEG), so every converter is tested on files the tests make.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace uel::test {

// A fresh folder under the build tree, removed when the test ends.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  std::filesystem::path path() const {
    return path_;
  }
  std::string file(const std::string& name) const {
    return (path_ / name).string();
  }

 private:
  std::filesystem::path path_;
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool gzip = false);
std::vector<uint8_t> read_bytes(const std::string& path);
// An IDX file of unsigned bytes with the given dimensions.
std::vector<uint8_t> idx_bytes(
    const std::vector<int64_t>& dims, const std::vector<uint8_t>& values);
// rgb: H*W*channels bytes, row-major HWC.
void write_png(
    const std::string& path,
    int height,
    int width,
    int channels,
    const std::vector<uint8_t>& pixels);
void write_jpeg(
    const std::string& path,
    int height,
    int width,
    int channels,
    const std::vector<uint8_t>& pixels);
// Copies a LibTorch archive (torch::save, OutputArchive) with every tensor's storage tagged as
// saved on `device` (e.g. "cuda:0"): what a GPU run writes, made on a machine without a GPU.
void retag_archive_device(
    const std::string& from, const std::string& to, const std::string& device);

}  // namespace uel::test

// Expects `statement` to throw `type` whose message contains `needle`.
#define EXPECT_THROW_WITH(statement, type, needle)                                  \
  do {                                                                              \
    try {                                                                           \
      statement;                                                                    \
      ADD_FAILURE() << "expected " #type " containing '" << (needle) << "'";        \
    } catch (const type& e) {                                                       \
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what(); \
    }                                                                               \
  } while (0)
