#pragma once

// Embedding networks: a backbone (small CNN for 28x28 inputs, ResNet-18/50 with a CIFAR or an
// ImageNet stem) followed by a linear head to model.low_dim and L2 normalisation (ISIF/NCE).

#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/output-archive.h>

#include "uel/comm/communicator.h"

namespace uel::models {

struct ModelConfig {
  std::string arch = "small_cnn";  // small_cnn | resnet18 | resnet50
  std::string stem = "cifar";      // cifar (3x3 conv, no max-pool) | imagenet (7x7/2 + max-pool)
  int64_t low_dim = 128;
  int64_t width = 32;       // small_cnn: channels of its first layer (doubling after)
  int64_t depth = 1;        // small_cnn: 3x3 conv-BN-ReLU layers per stage
  int64_t pool_grid = 1;    // backbone features: global average (1) or a grid x grid map
  int64_t head_hidden = 0;  // 0: a linear head; H: Linear(H)-BatchNorm-ReLU before it
  int64_t in_channels = 3;  // follows the dataset
  bool sync_bn = false;     // batch statistics over all ranks (needs `comm`)
};

const std::vector<std::string>& backbone_names();
// The layers an EmbeddingNet's features are read from (eval.layer, pseudo.layer): "head", the
// L2-normalised embedding, and "backbone", the pooled features below the head.
const std::vector<std::string>& layer_names();
bool is_layer(const std::string& name);
// ConfigError naming --`option` and the valid layers unless `layer` is one of layer_names().
void check_layer(const std::string& option, const std::string& layer);

// Feature extractor: [N, C, H, W] -> [N, out_features()].
class BackboneImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  virtual int64_t out_features() const = 0;
};

class EmbeddingNetImpl : public torch::nn::Module {
 public:
  EmbeddingNetImpl(const ModelConfig& config, std::shared_ptr<comm::Communicator> comm);
  // L2-normalised embeddings [N, low_dim]: embed(features(x)).
  at::Tensor forward(const at::Tensor& x);
  // Backbone features [N, feature_dim()], for heads other than the embedding (UDML's rotation).
  at::Tensor features(const at::Tensor& x);
  at::Tensor embed(const at::Tensor& features);
  int64_t feature_dim() const {
    return backbone_->out_features();
  }

  const ModelConfig& config() const {
    return config_;
  }

 private:
  ModelConfig config_;
  std::shared_ptr<BackboneImpl> backbone_;
  torch::nn::Sequential hidden_{nullptr};  // model.head_hidden > 0 only
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(EmbeddingNet);

// Stores the convolutions' weights channels-last (NHWC), so that their activations and gradients
// follow: oneDNN (LibTorch's float32 CPU convolutions) otherwise reorders every convolution's
// input, output and gradients between NCHW and its blocked layout. Values are unchanged.
void use_channels_last(torch::nn::Module& module);

// The plain factory: an error lists the valid names.
std::shared_ptr<BackboneImpl> make_backbone(
    const ModelConfig& config, std::shared_ptr<comm::Communicator> comm);

// Weights as a LibTorch archive (torch::serialize): one entry per parameter and buffer, keyed by
// its dotted name (e.g. "backbone.layer1.0.conv1.weight"). load_weights checks names and shapes;
// strict=false skips entries the archive lacks (e.g. a new head) and reports them.
void save_weights(torch::nn::Module& module, const std::string& path);
// Writes `archive` whole through an AtomicFile (DataError on a full disk): LibTorch's own file
// writer ends the process (std::terminate) when a write fails.
void save_archive(torch::serialize::OutputArchive& archive, const std::string& path);
std::vector<std::string> load_weights(
    torch::nn::Module& module, const std::string& path, bool strict);

}  // namespace uel::models
