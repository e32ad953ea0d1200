#include "test_util.h"

#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <caffe2/serialize/inline_container.h>
#include <jpeglib.h>
#include <png.h>

namespace uel::test {

namespace fs = std::filesystem;

ScratchDir::ScratchDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name =
      info != nullptr ? std::string(info->test_suite_name()) + "." + info->name() : "scratch";
  for (char& c : name) {
    if (c == '/')
      c = '_';
  }
  path_ = fs::temp_directory_path() / ("uel-test-" + std::to_string(getpid()) + "-" + name);
  fs::remove_all(path_);
  fs::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return;
  }
  std::ofstream out(path, std::ios::binary);
  out.write(
      reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> idx_bytes(
    const std::vector<int64_t>& dims, const std::vector<uint8_t>& values) {
  std::vector<uint8_t> out = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (int64_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      out.push_back(static_cast<uint8_t>((d >> shift) & 0xFF));
    }
  }
  out.insert(out.end(), values.begin(), values.end());
  return out;
}

void write_png(
    const std::string& path,
    int height,
    int width,
    int channels,
    const std::vector<uint8_t>& pixels) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  ASSERT_NE(png_image_write_to_file(&image, path.c_str(), 0, pixels.data(), 0, nullptr), 0)
      << image.message;
}

void write_jpeg(
    const std::string& path,
    int height,
    int width,
    int channels,
    const std::vector<uint8_t>& pixels) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  jpeg_compress_struct info;
  jpeg_error_mgr err;
  info.err = jpeg_std_error(&err);
  jpeg_create_compress(&info);
  jpeg_stdio_dest(&info, file);
  info.image_width = static_cast<JDIMENSION>(width);
  info.image_height = static_cast<JDIMENSION>(height);
  info.input_components = channels;
  info.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, 100, TRUE);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels.data()) + info.next_scanline * width * channels;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(file);
}

void retag_archive_device(
    const std::string& from, const std::string& to, const std::string& device) {
  caffe2::serialize::PyTorchStreamReader reader(from);
  caffe2::serialize::PyTorchStreamWriter writer(to);
  auto binunicode = [](const std::string& text) {  // the pickle opcode the archive writer uses
    const auto n = static_cast<uint32_t>(text.size());
    std::string op = "X";
    for (int i = 0; i < 4; ++i)
      op.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    return op + text;
  };
  const std::string cpu = binunicode("cpu"), tagged = binunicode(device);
  for (const std::string& name : reader.getAllRecords()) {
    if (writer.getAllWrittenRecords().count(name))
      continue;  // written by the writer itself (the format's version)
    auto [data, size] = reader.getRecord(name);
    std::string bytes(static_cast<const char*>(data.get()), size);
    if (name == "data.pkl") {
      // The location string is memoised: it appears once, later storages refer back to it.
      const size_t at = bytes.find(cpu);
      if (at == std::string::npos)
        throw std::runtime_error(from + " holds no storage saved on the CPU");
      bytes.replace(at, cpu.size(), tagged);
    }
    writer.writeRecord(name, bytes.data(), bytes.size());
  }
  writer.writeEndOfFile();
}

}  // namespace uel::test
