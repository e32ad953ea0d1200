#include "uel/data/image_io.h"

#include <csetjmp>
#include <cstdio>
#include <fstream>
#include <memory>

#include <ATen/ATen.h>
#include <jpeglib.h>
#include <png.h>

#include "uel/core/error.h"

namespace uel::data {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    std::fclose(f);
  }
};

struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr info) {
  auto* err = reinterpret_cast<JpegErrorManager*>(info->err);
  (*info->err->format_message)(info, err->message);
  std::longjmp(err->jump, 1);
}

// Decodes into `out` (resized by the callee through `allocate`); returns false with `message`
// set on a libjpeg error. Kept free of C++ objects with destructors: libjpeg reports errors by
// longjmp.
bool decode_jpeg_raw(
    std::FILE* file, int channels, at::Tensor* out, char* message, size_t message_size) {
  jpeg_decompress_struct info;
  JpegErrorManager err;
  info.err = jpeg_std_error(&err.base);
  err.base.error_exit = jpeg_error_exit;
  if (setjmp(err.jump)) {
    std::snprintf(message, message_size, "%s", err.message);
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  info.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&info);
  *out = at::empty(
      {static_cast<int64_t>(info.output_height),
       static_cast<int64_t>(info.output_width),
       static_cast<int64_t>(info.output_components)},
      at::kByte);
  uint8_t* base = out->data_ptr<uint8_t>();
  const size_t stride = static_cast<size_t>(info.output_width) * info.output_components;
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = base + info.output_scanline * stride;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}

at::Tensor decode_jpeg(const std::string& path, int channels) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  UEL_CHECK_DATA(file != nullptr, "cannot open image '{}'", path);
  at::Tensor out;
  char message[JMSG_LENGTH_MAX] = {0};
  const bool ok = decode_jpeg_raw(file.get(), channels, &out, message, sizeof(message));
  UEL_CHECK_DATA(ok, "cannot decode JPEG '{}': {}", path, message);
  return out;
}

at::Tensor decode_png(const std::string& path, int channels) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  UEL_CHECK_DATA(
      png_image_begin_read_from_file(&image, path.c_str()) != 0,
      "cannot decode PNG '{}': {}",
      path,
      image.message);
  // Transparent pixels are composed onto black, the libpng default for opaque formats.
  image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  at::Tensor out = at::empty({image.height, image.width, channels}, at::kByte);
  const bool ok = png_image_finish_read(&image, nullptr, out.data_ptr<uint8_t>(), 0, nullptr) != 0;
  const std::string message = image.message;
  png_image_free(&image);
  UEL_CHECK_DATA(ok, "cannot decode PNG '{}': {}", path, message);
  return out;
}

}  // namespace

at::Tensor decode_image(const std::string& path, int channels) {
  UEL_CHECK(channels == 1 || channels == 3, "decode_image: channels must be 1 or 3");
  unsigned char magic[8] = {0};
  {
    std::ifstream in(path, std::ios::binary);
    UEL_CHECK_DATA(in.good(), "cannot open image '{}' (missing file or no permission)", path);
    in.read(reinterpret_cast<char*>(magic), sizeof(magic));
  }
  if (magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    at::Tensor image = decode_jpeg(path, channels);
    // libjpeg cannot make RGB from some colour spaces (e.g. CMYK); catch that here.
    UEL_CHECK_DATA(
        image.size(2) == channels,
        "JPEG '{}' decoded to {} channels, expected {}",
        path,
        image.size(2),
        channels);
    return image;
  }
  if (png_sig_cmp(magic, 0, 8) == 0) {
    return decode_png(path, channels);
  }
  UEL_CHECK_DATA(false, "'{}' is neither a JPEG nor a PNG file (by its first bytes)", path);
  return {};
}

at::Tensor resize_image(const at::Tensor& image, int64_t height, int64_t width) {
  UEL_CHECK(image.dim() == 3 && image.scalar_type() == at::kByte, "resize_image expects uint8 HWC");
  if (image.size(0) == height && image.size(1) == width) {
    return image;
  }
  at::Tensor x = image.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
  x = at::_upsample_bilinear2d_aa(x, {height, width}, /*align_corners=*/false);
  return x.squeeze(0).permute({1, 2, 0}).round().clamp(0, 255).to(at::kByte).contiguous();
}

}  // namespace uel::data
