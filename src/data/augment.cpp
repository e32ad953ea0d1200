#include "uel/data/augment.h"

#include <cmath>

#include <ATen/ATen.h>

#include "uel/core/error.h"
#include "uel/core/rng.h"
#include "uel/data/dataset.h"

namespace uel::data {

namespace {

enum JitterOp { kBrightness = 0, kContrast = 1, kSaturation = 2, kHue = 3 };

at::Tensor per_image(const at::Tensor& factor) {
  return factor.view({-1, 1, 1, 1});
}

// torchvision's tensor RGB<->HSV, batched; x is [n, 3, H, W] in [0, 1].
at::Tensor rgb_to_hsv(const at::Tensor& x) {
  at::Tensor r = x.select(1, 0), g = x.select(1, 1), b = x.select(1, 2);
  at::Tensor maxc = std::get<0>(x.max(1));
  at::Tensor minc = std::get<0>(x.min(1));
  at::Tensor delta = maxc - minc;
  at::Tensor flat = delta == 0;
  at::Tensor s = delta / at::where(maxc == 0, at::ones_like(maxc), maxc);
  at::Tensor safe = at::where(flat, at::ones_like(delta), delta);
  at::Tensor rc = (maxc - r) / safe, gc = (maxc - g) / safe, bc = (maxc - b) / safe;
  at::Tensor h = at::where(maxc == r, bc - gc, at::where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc));
  h = at::remainder(h / 6.0, 1.0).masked_fill(flat, 0.0);
  return at::stack({h, s, maxc}, 1);
}

at::Tensor hsv_to_rgb(const at::Tensor& hsv) {
  at::Tensor h = hsv.select(1, 0), s = hsv.select(1, 1), v = hsv.select(1, 2);
  at::Tensor h6 = h * 6.0;
  at::Tensor sector = at::remainder(at::floor(h6), 6.0);
  at::Tensor f = h6 - at::floor(h6);
  at::Tensor p = (v * (1.0 - s)).clamp(0.0, 1.0);
  at::Tensor q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
  at::Tensor t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
  // Per sector (0..5): (r, g, b) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q).
  auto pick = [&](const at::Tensor& a0,
                  const at::Tensor& a1,
                  const at::Tensor& a2,
                  const at::Tensor& a3,
                  const at::Tensor& a4,
                  const at::Tensor& a5) {
    return at::where(
        sector == 0,
        a0,
        at::where(
            sector == 1,
            a1,
            at::where(
                sector == 2, a2, at::where(sector == 3, a3, at::where(sector == 4, a4, a5)))));
  };
  return at::stack({pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)}, 1);
}

at::Tensor blend(const at::Tensor& x, const at::Tensor& other, const at::Tensor& factor) {
  at::Tensor f = per_image(factor);
  return (f * x + (1.0 - f) * other).clamp(0.0, 1.0);
}

std::vector<double> per_channel(const std::vector<double>& values, int64_t channels) {
  return values.size() == 1 ? std::vector<double>(channels, values.front()) : values;
}

}  // namespace

void AugmentConfig::validate(int64_t channels) const {
  UEL_CHECK_CONFIG(size >= 0, "--aug.size must be >= 0 (0 = input size), got {}", size);
  UEL_CHECK_CONFIG(
      crop_scale_min > 0 && crop_scale_min <= crop_scale_max && crop_scale_max <= 1,
      "--aug.crop_scale_min/max must satisfy 0 < min <= max <= 1, got {} and {}",
      crop_scale_min,
      crop_scale_max);
  UEL_CHECK_CONFIG(
      crop_ratio_min > 0 && crop_ratio_min <= crop_ratio_max,
      "--aug.crop_ratio_min/max must satisfy 0 < min <= max, got {} and {}",
      crop_ratio_min,
      crop_ratio_max);
  UEL_CHECK_CONFIG(
      brightness >= 0 && contrast >= 0 && saturation >= 0,
      "--aug.brightness, --aug.contrast and --aug.saturation must be >= 0");
  UEL_CHECK_CONFIG(hue >= 0 && hue <= 0.5, "--aug.hue must be in [0, 0.5], got {}", hue);
  UEL_CHECK_CONFIG(
      grayscale_p >= 0 && grayscale_p <= 1 && flip_p >= 0 && flip_p <= 1,
      "--aug.grayscale_p and --aug.flip_p are probabilities in [0, 1]");
  UEL_CHECK_CONFIG(
      erase_p >= 0 && erase_p <= 1, "--aug.erase_p is a probability in [0, 1], got {}", erase_p);
  UEL_CHECK_CONFIG(
      erase_scale_min > 0 && erase_scale_min <= erase_scale_max && erase_scale_max < 1,
      "--aug.erase_scale_min/max must satisfy 0 < min <= max < 1, got {} and {}",
      erase_scale_min,
      erase_scale_max);
  for (const auto* values : {&mean, &std}) {
    const auto count = static_cast<int64_t>(values->size());
    UEL_CHECK_CONFIG(
        (channels == 0 && count <= 3) || count == 1 || count == channels,
        "--aug.mean and --aug.std need 1 or {} values (one per channel), got {}",
        channels,
        values->size());
  }
  for (double s : std) {
    UEL_CHECK_CONFIG(s > 0, "--aug.std values must be positive, got {}", s);
  }
}

Augmenter::Augmenter(AugmentConfig config, uint64_t seed)
    : config_(std::move(config)), seed_(seed) {
  UEL_CHECK(!config_.mean.empty() && !config_.std.empty(), "Augmenter needs mean and std");
}

ViewParams Augmenter::draw(
    int64_t height, int64_t width, int64_t epoch, int64_t sample, int view) const {
  const AugmentConfig& c = config_;
  Rng rng(derive_key(derive_key(stream_key(seed_, RngPurpose::kAugment, 0, epoch), sample), view));
  ViewParams p;

  // RandomResizedCrop.get_params: ten tries, then a centre crop of the clamped ratio.
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(c.crop_ratio_min), log_hi = std::log(c.crop_ratio_max);
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * rng.uniform(c.crop_scale_min, c.crop_scale_max);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const auto w = static_cast<int64_t>(std::lround(std::sqrt(target * aspect)));
    const auto h = static_cast<int64_t>(std::lround(std::sqrt(target / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      p.crop_top = rng.below(height - h + 1);
      p.crop_left = rng.below(width - w + 1);
      p.crop_height = h;
      p.crop_width = w;
      found = true;
    }
  }
  if (!found) {
    const double ratio = static_cast<double>(width) / height;
    p.crop_width = width;
    p.crop_height = height;
    if (ratio < c.crop_ratio_min) {
      p.crop_height = std::lround(width / c.crop_ratio_min);
    } else if (ratio > c.crop_ratio_max) {
      p.crop_width = std::lround(height * c.crop_ratio_max);
    }
    p.crop_top = (height - p.crop_height) / 2;
    p.crop_left = (width - p.crop_width) / 2;
  }

  auto factor = [&rng](double strength) {
    return strength > 0 ? rng.uniform(std::max(0.0, 1.0 - strength), 1.0 + strength) : 1.0;
  };
  p.brightness = factor(c.brightness);
  p.contrast = factor(c.contrast);
  p.saturation = factor(c.saturation);
  p.hue = c.hue > 0 ? rng.uniform(-c.hue, c.hue) : 0.0;
  for (int i = 3; i > 0; --i) {  // ColorJitter applies its four operations in random order
    std::swap(p.jitter_order[i], p.jitter_order[rng.below(i + 1)]);
  }
  p.grayscale = rng.bernoulli(c.grayscale_p);
  p.flip = rng.bernoulli(c.flip_p);
  p.rotation = c.rotation ? static_cast<int>(rng.below(4)) : 0;
  // Drawn last and only when enabled, so that runs without erasing keep every other draw.
  if (c.erase_p > 0 && rng.bernoulli(c.erase_p)) {
    // RandomErasing.get_params on the output: ten tries, else nothing is erased.
    const int64_t side = c.size > 0 ? c.size : height;
    const double out_area = static_cast<double>(side * side);
    const double log_ratio = std::log(1.0 / 0.3);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target = out_area * rng.uniform(c.erase_scale_min, c.erase_scale_max);
      const double aspect = std::exp(rng.uniform(-log_ratio, log_ratio));
      const auto h = static_cast<int64_t>(std::lround(std::sqrt(target * aspect)));
      const auto w = static_cast<int64_t>(std::lround(std::sqrt(target / aspect)));
      if (h > 0 && h < side && w > 0 && w < side) {
        p.erase_top = rng.below(side - h + 1);
        p.erase_left = rng.below(side - w + 1);
        p.erase_height = h;
        p.erase_width = w;
        break;
      }
    }
  }
  return p;
}

AugmentedViews Augmenter::train_view(
    const at::Tensor& images, const std::vector<int64_t>& ids, int64_t epoch, int view) const {
  UEL_CHECK(
      images.dim() == 4 && images.size(0) == static_cast<int64_t>(ids.size()),
      "train_view: {} images for {} ids",
      images.size(0),
      ids.size());
  std::vector<ViewParams> params;
  params.reserve(ids.size());
  for (int64_t id : ids) {
    params.push_back(draw(images.size(1), images.size(2), epoch, id, view));
  }
  return apply(images, params);
}

AugmentedViews Augmenter::apply(
    const at::Tensor& images, const std::vector<ViewParams>& params) const {
  UEL_CHECK(
      images.dim() == 4 && images.scalar_type() == at::kByte,
      "augmentation expects uint8 [n,H,W,C], got {} of {}",
      c10::str(images.sizes()),
      c10::str(images.scalar_type()));
  const int64_t n = images.size(0), height = images.size(1), width = images.size(2);
  const int64_t channels = images.size(3);
  const int64_t size = config_.size > 0 ? config_.size : height;
  const auto device = images.device();
  auto on_device = [&](std::vector<float>& v, std::vector<int64_t> shape) {
    return at::from_blob(v.data(), shape, at::kFloat).to(device);
  };

  // Crop, flip and rotation are one affine map from output to input coordinates (normalised,
  // align_corners=false), so a single grid_sample does all three.
  std::vector<float> theta(n * 6);
  std::vector<float> factors[4];
  std::vector<float> gray(n), rotation(n);
  for (auto& f : factors) {
    f.resize(n);
  }
  for (int64_t k = 0; k < n; ++k) {
    const ViewParams& p = params[k];
    const double sx = static_cast<double>(p.crop_width) / width;
    const double sy = static_cast<double>(p.crop_height) / height;
    // Rotation R^k by quarter turns: out(u, v) reads the unrotated view at R(u, v) = (-v, u).
    double a = 1, b = 0, c = 0, d = 1;  // [[a, b], [c, d]]
    for (int r = 0; r < p.rotation; ++r) {
      const double na = -c, nb = -d, nc = a, nd = b;
      a = na, b = nb, c = nc, d = nd;
    }
    const double fx = p.flip ? -1.0 : 1.0;
    float* t = theta.data() + k * 6;
    t[0] = static_cast<float>(sx * fx * a);
    t[1] = static_cast<float>(sx * fx * b);
    t[2] = static_cast<float>((2.0 * p.crop_left + p.crop_width) / width - 1.0);
    t[3] = static_cast<float>(sy * c);
    t[4] = static_cast<float>(sy * d);
    t[5] = static_cast<float>((2.0 * p.crop_top + p.crop_height) / height - 1.0);
    factors[kBrightness][k] = static_cast<float>(p.brightness);
    factors[kContrast][k] = static_cast<float>(p.contrast);
    factors[kSaturation][k] = static_cast<float>(p.saturation);
    factors[kHue][k] = static_cast<float>(p.hue);
    gray[k] = p.grayscale ? 1.0f : 0.0f;
    rotation[k] = static_cast<float>(p.rotation);
  }

  at::Tensor x = images.permute({0, 3, 1, 2}).to(at::kFloat).div_(255.0);
  at::Tensor grid = at::affine_grid_generator(
      on_device(theta, {n, 2, 3}),
      {n, channels, size, size},
      /*align_corners=*/false);
  x = at::grid_sampler(x, grid, /*bilinear*/ 0, /*border*/ 1, /*align_corners=*/false);

  // ColorJitter in each image's own order: round r applies, to each image, the operation in
  // position r of its order. Saturation, hue and grayscale do nothing to one channel.
  std::vector<int> active;
  if (config_.brightness > 0)
    active.push_back(kBrightness);
  if (config_.contrast > 0)
    active.push_back(kContrast);
  if (channels == 3 && config_.saturation > 0)
    active.push_back(kSaturation);
  if (channels == 3 && config_.hue > 0)
    active.push_back(kHue);
  if (!active.empty()) {
    at::Tensor factor_tensors[4];
    for (int op : active) {
      factor_tensors[op] = on_device(factors[op], {n});
    }
    for (int round = 0; round < 4; ++round) {
      for (int op : active) {
        std::vector<int64_t> rows;
        for (int64_t k = 0; k < n; ++k) {
          if (params[k].jitter_order[round] == op) {
            rows.push_back(k);
          }
        }
        if (rows.empty()) {
          continue;
        }
        at::Tensor idx = at::tensor(rows, at::kLong).to(device);
        at::Tensor sub = x.index_select(0, idx);
        at::Tensor f = factor_tensors[op].index_select(0, idx);
        switch (op) {
          case kBrightness:
            sub = adjust_brightness(sub, f);
            break;
          case kContrast:
            sub = adjust_contrast(sub, f);
            break;
          case kSaturation:
            sub = adjust_saturation(sub, f);
            break;
          default:
            sub = adjust_hue(sub, f);
        }
        x.index_copy_(0, idx, sub);
      }
    }
  }
  if (channels == 3 && config_.grayscale_p > 0) {
    at::Tensor mask = on_device(gray, {n, 1, 1, 1}) > 0.5;
    x = at::where(mask, to_grayscale(x).expand_as(x), x);
  }
  x = normalize(x);
  // Erased rectangles become 0 after normalisation: the training set's mean pixel.
  std::vector<float> keep;
  for (int64_t k = 0; k < n; ++k) {
    const ViewParams& p = params[k];
    if (p.erase_height == 0 || p.erase_width == 0)
      continue;
    UEL_CHECK(
        p.erase_top >= 0 && p.erase_left >= 0 && p.erase_top + p.erase_height <= size &&
            p.erase_left + p.erase_width <= size,
        "erased rectangle {}x{} at ({}, {}) leaves the {}x{} view",
        p.erase_height,
        p.erase_width,
        p.erase_top,
        p.erase_left,
        size,
        size);
    if (keep.empty())
      keep.assign(n * size * size, 1.0f);
    for (int64_t i = p.erase_top; i < p.erase_top + p.erase_height; ++i)
      std::fill_n(keep.begin() + (k * size + i) * size + p.erase_left, p.erase_width, 0.0f);
  }
  if (!keep.empty())
    x.mul_(on_device(keep, {n, 1, size, size}));
  return {x, on_device(rotation, {n}).to(at::kLong)};
}

at::Tensor Augmenter::eval_view(const at::Tensor& images) const {
  UEL_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, "eval_view expects uint8 NHWC");
  return normalize(images.permute({0, 3, 1, 2}).to(at::kFloat).div_(255.0));
}

at::Tensor Augmenter::normalize(const at::Tensor& x) const {
  const int64_t channels = x.size(1);
  std::vector<float> mean, inv_std;
  for (double m : per_channel(config_.mean, channels))
    mean.push_back(static_cast<float>(m));
  for (double s : per_channel(config_.std, channels))
    inv_std.push_back(static_cast<float>(1.0 / s));
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor m = at::tensor(mean, opts).to(x.device()).view({1, channels, 1, 1});
  at::Tensor s = at::tensor(inv_std, opts).to(x.device()).view({1, channels, 1, 1});
  return ((x - m) * s).contiguous();
}

at::Tensor adjust_brightness(const at::Tensor& x, const at::Tensor& factor) {
  return (x * per_image(factor)).clamp(0.0, 1.0);
}

at::Tensor to_grayscale(const at::Tensor& x) {
  if (x.size(1) == 1) {
    return x;
  }
  return (0.299 * x.select(1, 0) + 0.587 * x.select(1, 1) + 0.114 * x.select(1, 2)).unsqueeze(1);
}

at::Tensor adjust_contrast(const at::Tensor& x, const at::Tensor& factor) {
  at::Tensor mean = to_grayscale(x).mean({1, 2, 3}, /*keepdim=*/true);
  return blend(x, mean, factor);
}

at::Tensor adjust_saturation(const at::Tensor& x, const at::Tensor& factor) {
  return x.size(1) == 1 ? x : blend(x, to_grayscale(x), factor);
}

at::Tensor adjust_hue(const at::Tensor& x, const at::Tensor& shift) {
  if (x.size(1) == 1) {
    return x;
  }
  at::Tensor hsv = rgb_to_hsv(x);
  at::Tensor h = at::remainder(hsv.select(1, 0) + shift.view({-1, 1, 1}), 1.0);
  return hsv_to_rgb(at::stack({h, hsv.select(1, 1), hsv.select(1, 2)}, 1));
}

std::pair<std::vector<double>, std::vector<double>> channel_stats(
    const ImageDataset& dataset, const std::vector<int64_t>& subset, int64_t max_images) {
  UEL_CHECK(!subset.empty(), "channel_stats of an empty subset");
  const int64_t stride =
      std::max<int64_t>(1, static_cast<int64_t>(subset.size()) / std::max<int64_t>(1, max_images));
  std::vector<int64_t> picked;
  for (size_t i = 0; i < subset.size(); i += static_cast<size_t>(stride)) {
    picked.push_back(subset[i]);
  }
  const int64_t channels = dataset.info().channels;
  at::Tensor sum = at::zeros({channels}, at::kDouble);
  at::Tensor sum_sq = at::zeros({channels}, at::kDouble);
  int64_t count = 0;
  constexpr size_t kBlock = 512;
  for (size_t begin = 0; begin < picked.size(); begin += kBlock) {
    std::vector<int64_t> block(
        picked.begin() + begin, picked.begin() + std::min(picked.size(), begin + kBlock));
    at::Tensor x = dataset.read(block).to(at::kDouble).div_(255.0).reshape({-1, channels});
    sum += x.sum(0);
    sum_sq += (x * x).sum(0);
    count += x.size(0);
  }
  at::Tensor mean = sum / count;
  at::Tensor std = (sum_sq / count - mean * mean).clamp_min(1e-12).sqrt();
  return {
      std::vector<double>(mean.data_ptr<double>(), mean.data_ptr<double>() + channels),
      std::vector<double>(std.data_ptr<double>(), std.data_ptr<double>() + channels)};
}

}  // namespace uel::data
