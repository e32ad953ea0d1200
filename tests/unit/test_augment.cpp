#include <array>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/data/augment.h"
#include "uel/data/loader.h"

namespace uel::data {
namespace {

AugmentConfig plain_config() {
  AugmentConfig c;
  c.mean = {0.0};
  c.std = {1.0};
  return c;
}

// A full-image crop with nothing else: the identity view.
ViewParams identity_params(int64_t h, int64_t w) {
  ViewParams p;
  p.crop_height = h;
  p.crop_width = w;
  return p;
}

at::Tensor random_images(int64_t n, int64_t h, int64_t w, int64_t c) {
  return at::randint(0, 256, {n, h, w, c}, at::TensorOptions().dtype(at::kByte));
}

at::Tensor as_float(const at::Tensor& images) {
  return images.permute({0, 3, 1, 2}).to(at::kFloat) / 255.0;
}

TEST(Augment, IdentityCropReproducesTheImage) {
  Augmenter aug(plain_config(), 0);
  at::Tensor x = random_images(3, 8, 8, 3);
  auto out = aug.apply(x, std::vector<ViewParams>(3, identity_params(8, 8)));
  EXPECT_TRUE(at::allclose(out.images, as_float(x), 0, 1e-5));
}

TEST(Augment, CropToOutputSizeCopiesTheWindowExactly) {
  AugmentConfig c = plain_config();
  c.size = 4;
  Augmenter aug(c, 0);
  at::Tensor x = random_images(2, 10, 9, 1);
  ViewParams p = identity_params(4, 4);
  p.crop_top = 3;
  p.crop_left = 5;
  auto out = aug.apply(x, {p, p});
  at::Tensor window = as_float(x).slice(2, 3, 7).slice(3, 5, 9);
  EXPECT_TRUE(at::allclose(out.images, window, 0, 1e-5));
}

TEST(Augment, FlipAndRotationMatchTorch) {
  Augmenter aug(plain_config(), 0);
  at::Tensor x = random_images(1, 6, 6, 1);
  ViewParams flip = identity_params(6, 6);
  flip.flip = true;
  EXPECT_TRUE(at::allclose(aug.apply(x, {flip}).images, as_float(x).flip({3}), 0, 1e-5));
  for (int k = 1; k < 4; ++k) {
    ViewParams rot = identity_params(6, 6);
    rot.rotation = k;
    rot.flip = true;
    auto out = aug.apply(x, {rot});
    // rot90 (counter-clockwise, dims H->W) of the flipped view.
    EXPECT_TRUE(at::allclose(out.images, at::rot90(as_float(x).flip({3}), k, {2, 3}), 0, 1e-5))
        << k;
    EXPECT_EQ(out.rotation_labels[0].item<int64_t>(), k);
  }
}

// A 2x2 RGB image from its pixels in row-major order, as [1, 3, 2, 2].
at::Tensor image_of(const std::vector<std::array<float, 3>>& pixels) {
  at::Tensor x = at::empty({2, 2, 3});
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t c = 0; c < 3; ++c)
      x[i / 2][i % 2][c] = pixels[i][c];
  }
  return x.permute({2, 0, 1}).unsqueeze(0).contiguous();
}

TEST(Augment, ColorOperationsFollowTheirDefinitions) {
  // Red, green, blue and dark-yellow pixels, twice (factors 0.5 and 2). Expected values are worked
  // out by hand from torchvision's definitions: gray = 0.299 R + 0.587 G + 0.114 B (0.299, 0.587,
  // 0.114, 0.443; mean 0.36075, not the channel mean 1/3); brightness blends with black,
  // contrast with the mean gray, saturation with each pixel's gray; results clamp to [0, 1].
  const at::Tensor one = image_of({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0.5, 0.5, 0}});
  const at::Tensor x = at::cat({one, one});
  const at::Tensor f = at::tensor({0.5f, 2.0f});
  const auto expect = [&](const at::Tensor& got,
                          const std::vector<std::array<float, 3>>& half,
                          const std::vector<std::array<float, 3>>& twice) {
    const at::Tensor want = at::cat({image_of(half), image_of(twice)});
    EXPECT_TRUE(at::allclose(got, want, 0, 1e-6)) << got << "\nwant\n" << want;
  };
  EXPECT_TRUE(at::allclose(
      to_grayscale(one).flatten(), at::tensor({0.299f, 0.587f, 0.114f, 0.443f}), 0, 1e-6));
  expect(
      adjust_brightness(x, f),
      {{0.5, 0, 0}, {0, 0.5, 0}, {0, 0, 0.5}, {0.25, 0.25, 0}},
      {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0}});
  // 0.5 x + 0.5 * 0.36075 and 2 x - 0.36075.
  expect(
      adjust_contrast(x, f),
      {{0.680375, 0.180375, 0.180375},
       {0.180375, 0.680375, 0.180375},
       {0.180375, 0.180375, 0.680375},
       {0.430375, 0.430375, 0.180375}},
      {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0.63925, 0.63925, 0}});
  // 0.5 x + 0.5 gray and 2 x - gray.
  expect(
      adjust_saturation(x, f),
      {{0.6495, 0.1495, 0.1495},
       {0.2935, 0.7935, 0.2935},
       {0.057, 0.057, 0.557},
       {0.4715, 0.4715, 0.2215}},
      {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0.557, 0.557, 0}});
  // Hue: a zero shift is the identity; a third of a turn maps red to green and green to blue.
  EXPECT_TRUE(at::allclose(adjust_hue(x, at::zeros({2})), x, 1e-5, 1e-5));
  at::Tensor red = at::zeros({1, 3, 1, 2});
  red.select(1, 0).fill_(0.8);
  at::Tensor shifted = adjust_hue(red, at::tensor({1.0f / 3}));
  EXPECT_TRUE(
      at::allclose(shifted.flatten(), at::tensor({0.f, 0.f, 0.8f, 0.8f, 0.f, 0.f}), 1e-5, 1e-5));
  // One channel: saturation and hue change nothing.
  at::Tensor g = at::rand({2, 1, 3, 3});
  EXPECT_TRUE(at::equal(adjust_saturation(g, f), g));
  EXPECT_TRUE(at::equal(adjust_hue(g, f), g));
}

TEST(Augment, NormalizeUsesPerChannelStatistics) {
  AugmentConfig c;
  c.mean = {0.5, 0.25, 0.0};
  c.std = {0.5, 0.25, 2.0};
  Augmenter aug(c, 0);
  at::Tensor x = random_images(2, 3, 3, 3);
  at::Tensor expected = as_float(x);
  expected.select(1, 0).sub_(0.5).div_(0.5);
  expected.select(1, 1).sub_(0.25).div_(0.25);
  expected.select(1, 2).div_(2.0);
  EXPECT_TRUE(at::allclose(aug.eval_view(x), expected, 1e-5, 1e-6));
}

TEST(Augment, DrawsFollowTheConfiguredRanges) {
  AugmentConfig c = plain_config();
  c.rotation = true;
  Augmenter aug(c, 5);
  int flips = 0, grays = 0;
  std::vector<int> rotations(4, 0);
  for (int64_t id = 0; id < 2000; ++id) {
    ViewParams p = aug.draw(32, 32, 0, id, 0);
    const double area = double(p.crop_height * p.crop_width) / (32 * 32);
    const double ratio = double(p.crop_width) / p.crop_height;
    EXPECT_GE(area, 0.2 - 0.05);  // rounding of the side lengths
    EXPECT_LE(area, 1.0);
    EXPECT_GE(ratio, 3.0 / 4 - 0.1);
    EXPECT_LE(ratio, 4.0 / 3 + 0.1);
    EXPECT_GE(p.crop_top, 0);
    EXPECT_LE(p.crop_top + p.crop_height, 32);
    EXPECT_LE(p.crop_left + p.crop_width, 32);
    EXPECT_GE(p.brightness, 0.6);
    EXPECT_LE(p.brightness, 1.4);
    EXPECT_LE(std::abs(p.hue), 0.4);
    flips += p.flip;
    grays += p.grayscale;
    ++rotations[p.rotation];
  }
  EXPECT_NEAR(flips / 2000.0, 0.5, 0.05);
  EXPECT_NEAR(grays / 2000.0, 0.2, 0.04);
  for (int r : rotations)
    EXPECT_NEAR(r / 2000.0, 0.25, 0.05);
}

// aug.erase_p: the rectangle reads as the mean pixel (0 after normalising), the rest is untouched.
TEST(Augment, ErasingSetsItsRectangleToTheMean) {
  AugmentConfig c = plain_config();
  c.mean = {0.5};
  c.std = {0.25};
  Augmenter aug(c, 0);
  at::Tensor x = random_images(2, 6, 6, 1);
  ViewParams erased = identity_params(6, 6);
  erased.erase_top = 2;
  erased.erase_left = 1;
  erased.erase_height = 3;
  erased.erase_width = 4;
  at::Tensor expected = aug.eval_view(x);
  auto out = aug.apply(x, {identity_params(6, 6), erased}).images;
  EXPECT_TRUE(at::allclose(out[0], expected[0], 0, 1e-5));
  expected[1].slice(1, 2, 5).slice(2, 1, 5).zero_();
  EXPECT_TRUE(at::allclose(out[1], expected[1], 0, 1e-5));
  EXPECT_EQ(out[1].slice(1, 2, 5).slice(2, 1, 5).abs().sum().item<float>(), 0.0f);
  erased.erase_left = 3;  // 3 + 4 > 6
  EXPECT_THROW_WITH(aug.apply(x, {erased, erased}), Error, "leaves the 6x6 view");
}

// Erasing is drawn after everything else: enabling it keeps every other choice of a view.
TEST(Augment, ErasingDrawsFollowTheirRangesAndKeepTheOtherDraws) {
  AugmentConfig c = plain_config();
  Augmenter plain(c, 3);
  c.erase_p = 0.5;
  c.erase_scale_min = 0.05;
  c.erase_scale_max = 0.2;
  Augmenter erasing(c, 3);
  int erased = 0;
  for (int64_t id = 0; id < 2000; ++id) {
    const ViewParams a = plain.draw(28, 28, 1, id, 0), b = erasing.draw(28, 28, 1, id, 0);
    EXPECT_EQ(a.crop_top, b.crop_top);
    EXPECT_EQ(a.crop_width, b.crop_width);
    EXPECT_EQ(a.brightness, b.brightness);
    EXPECT_EQ(a.flip, b.flip);
    EXPECT_EQ(a.erase_height, 0);
    if (b.erase_height == 0)
      continue;
    ++erased;
    const double area = double(b.erase_height * b.erase_width) / (28 * 28);
    EXPECT_GE(area, 0.05 - 0.02);  // rounding of the side lengths
    EXPECT_LE(area, 0.2 + 0.02);
    EXPECT_GE(double(b.erase_height) / b.erase_width, 0.3 * 0.8);
    EXPECT_LE(double(b.erase_height) / b.erase_width, 3.3 * 1.2);
    EXPECT_LE(b.erase_top + b.erase_height, 28);
    EXPECT_LE(b.erase_left + b.erase_width, 28);
  }
  EXPECT_NEAR(erased / 2000.0, 0.5, 0.05);
}

TEST(Augment, ViewsAreKeyedBySampleNotByBatch) {
  AugmentConfig c = plain_config();
  Augmenter aug(c, 11);
  at::Tensor x = random_images(3, 12, 12, 3);
  // Sample 42 alone and inside a batch in another position: the same view.
  auto alone = aug.train_view(x.slice(0, 1, 2), {42}, 3, 0).images;
  auto batch = aug.train_view(x, {7, 42, 9}, 3, 0).images;
  EXPECT_TRUE(at::equal(alone[0], batch[1]));
  // Another view, epoch or seed changes it.
  EXPECT_FALSE(at::equal(alone, aug.train_view(x.slice(0, 1, 2), {42}, 3, 1).images));
  EXPECT_FALSE(at::equal(alone, aug.train_view(x.slice(0, 1, 2), {42}, 4, 0).images));
  EXPECT_FALSE(at::equal(alone, Augmenter(c, 12).train_view(x.slice(0, 1, 2), {42}, 3, 0).images));
}

TEST(Augment, ValidateNamesTheOption) {
  AugmentConfig c = plain_config();
  c.hue = 0.7;
  EXPECT_THROW_WITH(c.validate(3), ConfigError, "--aug.hue");
  c = plain_config();
  c.crop_scale_min = 0;
  EXPECT_THROW_WITH(c.validate(3), ConfigError, "--aug.crop_scale_min");
  c = plain_config();
  c.mean = {0.1, 0.2};
  EXPECT_THROW_WITH(c.validate(3), ConfigError, "1 or 3 values");
  c = plain_config();
  c.erase_p = 1.5;
  EXPECT_THROW_WITH(c.validate(1), ConfigError, "--aug.erase_p");
  c = plain_config();
  c.erase_scale_max = 1;
  EXPECT_THROW_WITH(c.validate(1), ConfigError, "--aug.erase_scale_min/max");
}

}  // namespace
}  // namespace uel::data
