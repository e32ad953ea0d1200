#pragma once

// Batched two-view augmentation on tensors (on the training device). Every random draw is keyed
// by (seed, epoch, sample index, view), never by rank or batch position, so an instance gets the
// same views on 1, 2 or 4 ranks and on every rerun.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace uel::data {

// Defaults are the seed's CIFAR recipe: RandomResizedCrop(scale 0.2-1), ColorJitter(0.4 each),
// RandomGrayscale(0.2), horizontal flip.
struct AugmentConfig {
  int64_t size = 0;  // output side; 0 = the input height
  double crop_scale_min = 0.2;
  double crop_scale_max = 1.0;
  double crop_ratio_min = 3.0 / 4.0;
  double crop_ratio_max = 4.0 / 3.0;
  double brightness = 0.4;
  double contrast = 0.4;
  double saturation = 0.4;
  double hue = 0.4;  // in [0, 0.5]
  double grayscale_p = 0.2;
  double flip_p = 0.5;
  bool rotation = false;  // rotate each view by a random multiple of 90 degrees, with labels
  // RandomErasing (Zhong et al. 2020; torchvision's defaults but p, and an aspect range symmetric
  // in log): with probability erase_p a rectangle of erase_scale of the output's area, aspect 0.3
  // to 1/0.3 (torchvision: 0.3 to 3.3), is set to the mean pixel.
  double erase_p = 0;
  double erase_scale_min = 0.02;
  double erase_scale_max = 0.33;
  std::vector<double> mean;  // per channel (or one value for all); [0,1] pixel scale
  std::vector<double> std;

  // Throws ConfigError naming the aug.* option at fault; channels = 0 skips the per-channel
  // checks (the dataset is not open yet).
  void validate(int64_t channels) const;
};

// The random choices for one view of one sample (exposed for tests).
struct ViewParams {
  int64_t crop_top = 0, crop_left = 0, crop_height = 0, crop_width = 0;
  bool flip = false;
  int rotation = 0;  // quarter turns counter-clockwise
  double brightness = 1, contrast = 1, saturation = 1, hue = 0;
  int jitter_order[4] = {0, 1, 2, 3};  // brightness, contrast, saturation, hue
  bool grayscale = false;
  int64_t erase_top = 0, erase_left = 0, erase_height = 0, erase_width = 0;  // 0 x 0: none
};

struct AugmentedViews {
  at::Tensor images;           // float [n, C, S, S], normalised
  at::Tensor rotation_labels;  // int64 [n] (all zero when rotation is off)
};

class Augmenter {
 public:
  Augmenter(AugmentConfig config, uint64_t seed);

  const AugmentConfig& config() const {
    return config_;
  }
  ViewParams draw(int64_t height, int64_t width, int64_t epoch, int64_t sample, int view) const;

  // images: uint8 [n,H,W,C] on the device to augment on; ids: sample index of each row.
  AugmentedViews train_view(
      const at::Tensor& images, const std::vector<int64_t>& ids, int64_t epoch, int view) const;
  // Applies given parameters (tests pass hand-made ones).
  AugmentedViews apply(const at::Tensor& images, const std::vector<ViewParams>& params) const;

  // The evaluation transform: to float and normalise, nothing random.
  at::Tensor eval_view(const at::Tensor& images) const;

 private:
  at::Tensor normalize(const at::Tensor& x) const;

  AugmentConfig config_;
  uint64_t seed_;
};

// Colour operations on float [n, C, H, W] images in [0, 1] with one factor per image ([n]);
// torchvision's definitions, exposed for tests.
at::Tensor adjust_brightness(const at::Tensor& x, const at::Tensor& factor);
at::Tensor adjust_contrast(const at::Tensor& x, const at::Tensor& factor);
at::Tensor adjust_saturation(const at::Tensor& x, const at::Tensor& factor);
at::Tensor adjust_hue(const at::Tensor& x, const at::Tensor& shift);
at::Tensor to_grayscale(const at::Tensor& x);  // [n, 1, H, W], ITU-R 601-2 luma

// Per-channel mean and std of pixels in [0,1] over a strided sample of at most max_images.
class ImageDataset;
std::pair<std::vector<double>, std::vector<double>> channel_stats(
    const ImageDataset& dataset, const std::vector<int64_t>& subset, int64_t max_images = 10000);

}  // namespace uel::data
