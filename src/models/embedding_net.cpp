#include "uel/models/embedding_net.h"

#include <algorithm>
#include <filesystem>

#include <fmt/ranges.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/modules/container/functional.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/serialize.h>

#include "uel/core/error.h"
#include "uel/core/files.h"
#include "uel/models/batch_norm.h"

namespace uel::models {

namespace {

namespace nn = torch::nn;

// BatchNorm over this rank's batch, or the global one (a communicator: model.sync_bn), as a
// child named "bn": the parameter names checkpoints have always had.
class Norm2dImpl : public nn::Module {
 public:
  Norm2dImpl(int64_t channels, const std::shared_ptr<comm::Communicator>& comm)
      : bn_(register_module("bn", BatchNorm(channels, comm))) {}
  at::Tensor forward(const at::Tensor& x) {
    return bn_->forward(x);
  }

 private:
  BatchNorm bn_;
};
TORCH_MODULE(Norm2d);

// model.pool_grid: global average pooling (1), or average pooling to a grid x grid map, flattened,
// which keeps where in the image a feature is (a garment's outline on 28x28 images).
at::Tensor pool(const at::Tensor& h, int64_t grid) {
  if (grid == 1)
    return h.mean({2, 3});
  if (h.size(2) == grid && h.size(3) == grid)  // already the grid (28x28 inputs, grid 4): as is
    return h.flatten(1);
  return at::adaptive_avg_pool2d(h, {grid, grid}).flatten(1);
}

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false));
}

// Four stages of model.depth 3x3 conv-BN-ReLU layers for 28x28 grayscale (or small RGB) images;
// the first layer of stages 1-3 halves the map. Layers past the first of a stage are named
// conv<stage>_<layer> so that depth 1 keeps the names of earlier checkpoints.
class SmallCnnImpl : public BackboneImpl {
 public:
  SmallCnnImpl(const ModelConfig& c, const std::shared_ptr<comm::Communicator>& comm)
      : grid_(c.pool_grid) {
    int64_t in = c.in_channels;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t out = c.width << stage;
      for (int64_t layer = 0; layer < c.depth; ++layer) {
        const std::string suffix =
            layer == 0 ? fmt::format("{}", stage) : fmt::format("{}_{}", stage, layer);
        const int64_t stride = stage > 0 && layer == 0 ? 2 : 1;
        convs_.push_back(register_module("conv" + suffix, conv(in, out, 3, stride, 1)));
        norms_.push_back(register_module("bn" + suffix, Norm2d(out, comm)));
        in = out;
      }
    }
    out_features_ = in * grid_ * grid_;
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = x;
    for (size_t i = 0; i < convs_.size(); ++i) {
      h = torch::relu(norms_[i]->forward(convs_[i]->forward(h)));
    }
    return pool(h, grid_);
  }
  int64_t out_features() const override {
    return out_features_;
  }

 private:
  std::vector<nn::Conv2d> convs_;
  std::vector<Norm2d> norms_;
  int64_t grid_ = 1;
  int64_t out_features_ = 0;
};

class BlockImpl : public nn::Module {
 public:
  // bottleneck: 1x1 -> 3x3 -> 1x1 with 4x expansion (ResNet-50); else two 3x3 (ResNet-18).
  BlockImpl(
      int64_t in,
      int64_t planes,
      int64_t stride,
      bool bottleneck,
      const std::shared_ptr<comm::Communicator>& comm) {
    const int64_t out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      layers_.push_back(register_module("conv1", conv(in, planes, 1, 1, 0)));
      layers_.push_back(register_module("conv2", conv(planes, planes, 3, stride, 1)));
      layers_.push_back(register_module("conv3", conv(planes, out, 1, 1, 0)));
    } else {
      layers_.push_back(register_module("conv1", conv(in, planes, 3, stride, 1)));
      layers_.push_back(register_module("conv2", conv(planes, planes, 3, 1, 1)));
    }
    for (size_t i = 0; i < layers_.size(); ++i) {
      norms_.push_back(register_module(
          fmt::format("bn{}", i + 1), Norm2d(layers_[i]->options.out_channels(), comm)));
    }
    if (stride != 1 || in != out) {
      shortcut_conv_ = register_module("shortcut_conv", conv(in, out, 1, stride, 0));
      shortcut_bn_ = register_module("shortcut_bn", Norm2d(out, comm));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = x;
    for (size_t i = 0; i < layers_.size(); ++i) {
      h = norms_[i]->forward(layers_[i]->forward(h));
      if (i + 1 < layers_.size())
        h = torch::relu(h);
    }
    at::Tensor skip = shortcut_conv_ ? shortcut_bn_->forward(shortcut_conv_->forward(x)) : x;
    return torch::relu(h + skip);
  }

 private:
  std::vector<nn::Conv2d> layers_;
  std::vector<Norm2d> norms_;
  nn::Conv2d shortcut_conv_{nullptr};
  Norm2d shortcut_bn_{nullptr};
};
TORCH_MODULE(Block);

class ResNetImpl : public BackboneImpl {
 public:
  ResNetImpl(
      const ModelConfig& c,
      bool bottleneck,
      std::vector<int> depths,
      const std::shared_ptr<comm::Communicator>& comm)
      : imagenet_stem_(c.stem == "imagenet") {
    stem_conv_ = register_module(
        "conv1",
        imagenet_stem_ ? conv(c.in_channels, 64, 7, 2, 3) : conv(c.in_channels, 64, 3, 1, 1));
    stem_bn_ = register_module("bn1", Norm2d(64, comm));
    int64_t in = 64;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t planes = int64_t{64} << stage;
      // torchvision's parameter names: layer1.0.conv1.weight, ...
      nn::ModuleList layer;
      for (int b = 0; b < depths[stage]; ++b) {
        Block block(in, planes, b == 0 && stage > 0 ? 2 : 1, bottleneck, comm);
        layer->push_back(block);
        blocks_.push_back(block);
        in = bottleneck ? planes * 4 : planes;
      }
      register_module(fmt::format("layer{}", stage + 1), layer);
    }
    grid_ = c.pool_grid;
    out_features_ = in * grid_ * grid_;
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = torch::relu(stem_bn_->forward(stem_conv_->forward(x)));
    if (imagenet_stem_) {
      h = torch::max_pool2d(h, 3, 2, 1);
    }
    for (auto& block : blocks_)
      h = block->forward(h);
    return pool(h, grid_);
  }
  int64_t out_features() const override {
    return out_features_;
  }

 private:
  bool imagenet_stem_;
  nn::Conv2d stem_conv_{nullptr};
  Norm2d stem_bn_{nullptr};
  std::vector<Block> blocks_;
  int64_t grid_ = 1;
  int64_t out_features_ = 0;
};

}  // namespace

const std::vector<std::string>& backbone_names() {
  static const std::vector<std::string> names = {"small_cnn", "resnet18", "resnet50"};
  return names;
}

const std::vector<std::string>& layer_names() {
  static const std::vector<std::string> names = {"head", "backbone"};
  return names;
}

bool is_layer(const std::string& name) {
  const std::vector<std::string>& names = layer_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

void check_layer(const std::string& option, const std::string& layer) {
  UEL_CHECK_CONFIG(
      is_layer(layer), "--{}='{}' is not one of {}", option, layer, fmt::join(layer_names(), "|"));
}

std::shared_ptr<BackboneImpl> make_backbone(
    const ModelConfig& c, std::shared_ptr<comm::Communicator> comm) {
  UEL_CHECK_CONFIG(
      c.stem == "cifar" || c.stem == "imagenet",
      "--model.stem='{}' is not one of cifar|imagenet",
      c.stem);
  UEL_CHECK_CONFIG(c.in_channels > 0 && c.width > 0, "--model.width must be positive");
  UEL_CHECK_CONFIG(c.depth > 0, "--model.depth must be positive, got {}", c.depth);
  UEL_CHECK(!c.sync_bn || comm != nullptr, "model.sync_bn needs a communicator");
  if (!c.sync_bn)
    comm = nullptr;
  if (c.arch == "small_cnn")
    return std::make_shared<SmallCnnImpl>(c, comm);
  if (c.arch == "resnet18")
    return std::make_shared<ResNetImpl>(c, false, std::vector<int>{2, 2, 2, 2}, comm);
  if (c.arch == "resnet50")
    return std::make_shared<ResNetImpl>(c, true, std::vector<int>{3, 4, 6, 3}, comm);
  UEL_CHECK_CONFIG(
      false, "--model.arch='{}' is not one of {}", c.arch, fmt::join(backbone_names(), "|"));
  return nullptr;
}

EmbeddingNetImpl::EmbeddingNetImpl(
    const ModelConfig& config, std::shared_ptr<comm::Communicator> comm)
    : config_(config) {
  UEL_CHECK_CONFIG(config.low_dim > 0, "--model.low_dim must be positive, got {}", config.low_dim);
  UEL_CHECK_CONFIG(
      config.head_hidden >= 0,
      "--model.head_hidden must be 0 or positive, got {}",
      config.head_hidden);
  backbone_ = register_module("backbone", make_backbone(config, comm));
  int64_t in = backbone_->out_features();
  if (config.head_hidden > 0) {
    // A projection MLP (SimCLR, MoCo v2): the loss shapes the space after it, which leaves the
    // backbone's features (eval.layer=backbone) less specialised to instance discrimination.
    hidden_ = register_module(
        "head_hidden",
        nn::Sequential(
            nn::Linear(nn::LinearOptions(in, config.head_hidden).bias(false)),
            BatchNorm(config.head_hidden, config.sync_bn ? comm : nullptr),
            nn::Functional(at::relu)));
    in = config.head_hidden;
  }
  head_ = register_module("head", nn::Linear(in, config.low_dim));
}

at::Tensor EmbeddingNetImpl::forward(const at::Tensor& x) {
  return embed(features(x));
}

at::Tensor EmbeddingNetImpl::features(const at::Tensor& x) {
  return backbone_->forward(x);
}

at::Tensor EmbeddingNetImpl::embed(const at::Tensor& features) {
  // The seed divides by the norm without an epsilon; a tiny floor only guards all-zero rows.
  const at::Tensor h = hidden_ ? hidden_->forward(features) : features;
  return nn::functional::normalize(
      head_->forward(h), nn::functional::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
}

void use_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    // Restrided even where NCHW and NHWC strides describe the same order (one input channel):
    // LibTorch picks the layout from the strides.
    if (p.dim() == 4)
      p.set_data(at::empty_like(p, at::MemoryFormat::ChannelsLast).copy_(p));
  }
}

void save_weights(torch::nn::Module& module, const std::string& path) {
  torch::serialize::OutputArchive archive;
  for (const auto& p : module.named_parameters())
    archive.write(p.key(), p.value());
  for (const auto& b : module.named_buffers())
    archive.write(b.key(), b.value(), /*is_buffer=*/true);
  save_archive(archive, path);
}

void save_archive(torch::serialize::OutputArchive& archive, const std::string& path) {
  AtomicFile file(path);
  archive.save_to([&file](const void* data, size_t size) {
    file.write(data, size);
    return size;  // a failed write is reported by commit()
  });
  file.commit();
}

std::vector<std::string> load_weights(
    torch::nn::Module& module, const std::string& path, bool strict) {
  UEL_CHECK_DATA(std::filesystem::is_regular_file(path), "weights file '{}' does not exist", path);
  torch::serialize::InputArchive archive;
  try {
    // Read onto the CPU, then copied to the model's device: weights saved on a GPU load on a
    // machine without one (uel eval or embed of a GPU run), and on any rank's device.
    archive.load_from(path, c10::Device(c10::kCPU));
  } catch (const std::exception& e) {
    UEL_CHECK_DATA(
        false,
        "'{}' is not a LibTorch weights archive: {}",
        path,
        std::string(e.what()).substr(0, 200));
  }
  std::vector<std::string> skipped;
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, at::Tensor& target, bool buffer) {
    at::Tensor value;
    if (!archive.try_read(name, value, buffer)) {
      UEL_CHECK_DATA(
          !strict, "'{}' has no entry '{}'; pass non-strict loading to skip it", path, name);
      skipped.push_back(name);
      return;
    }
    UEL_CHECK_DATA(
        value.sizes() == target.sizes(),
        "'{}': '{}' has shape {} but the model expects {}",
        path,
        name,
        c10::str(value.sizes()),
        c10::str(target.sizes()));
    target.copy_(value);
  };
  for (auto& p : module.named_parameters())
    load(p.key(), p.value(), false);
  for (auto& b : module.named_buffers())
    load(b.key(), b.value(), true);
  return skipped;
}

}  // namespace uel::models
