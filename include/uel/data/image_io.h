#pragma once

#include <string>

#include <ATen/core/Tensor.h>

namespace uel::data {

// Decodes a JPEG or PNG file (detected by its magic bytes) into uint8 [H, W, channels];
// channels is 1 (grayscale) or 3 (RGB), converting as needed.
at::Tensor decode_image(const std::string& path, int channels);

// Resizes uint8 [H, W, C] to [height, width, C] with antialiased bilinear filtering, ignoring
// the aspect ratio (the seed's pre-processing of CUB/Cars/SOP).
at::Tensor resize_image(const at::Tensor& image, int64_t height, int64_t width);

}  // namespace uel::data
