#include <map>
#include <set>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/models/embedding_net.h"

namespace uel::models {
namespace {

TEST(Models, EveryBackboneEmbedsToUnitVectors) {
  struct Case {
    std::string arch, stem;
    int64_t channels, side;
  };
  for (const Case& c :
       {Case{"small_cnn", "cifar", 1, 28},
        Case{"resnet18", "cifar", 3, 32},
        Case{"resnet18", "imagenet", 3, 64},
        Case{"resnet50", "cifar", 3, 16}}) {
    ModelConfig config;
    config.arch = c.arch;
    config.stem = c.stem;
    config.in_channels = c.channels;
    config.low_dim = 16;
    EmbeddingNet net(config, nullptr);
    at::Tensor out = net->forward(torch::randn({2, c.channels, c.side, c.side}));
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 16})) << c.arch;
    EXPECT_TRUE(torch::allclose(out.norm(2, 1), torch::ones({2}), 1e-5, 1e-5)) << c.arch;
  }
}

// model.pool_grid: the G x G cells of small_cnn's 4 x 4 map are equal, so their mean per channel
// is the global average pooling of the same network (same seed, same backbone weights).
TEST(Models, PoolGridKeepsCellsWhoseMeanIsTheGlobalAverage) {
  const at::Tensor x = torch::randn({3, 1, 28, 28}, at::kDouble);
  ModelConfig config;
  config.in_channels = 1;
  config.width = 4;
  config.low_dim = 8;
  torch::manual_seed(7);
  EmbeddingNet global(config, nullptr);
  global->to(at::kDouble);
  global->eval();
  const at::Tensor pooled = global->features(x);
  ASSERT_EQ(pooled.sizes(), (std::vector<int64_t>{3, 32}));
  for (const int64_t grid : {2, 4}) {
    config.pool_grid = grid;
    torch::manual_seed(7);
    EmbeddingNet net(config, nullptr);
    net->to(at::kDouble);
    net->eval();
    EXPECT_EQ(net->feature_dim(), 32 * grid * grid);
    const at::Tensor cells = net->features(x);
    ASSERT_EQ(cells.sizes(), (std::vector<int64_t>{3, 32 * grid * grid}));
    EXPECT_TRUE(torch::allclose(cells.view({3, 32, grid * grid}).mean(2), pooled, 1e-12, 1e-12))
        << "grid " << grid;
    EXPECT_EQ(net->forward(x).sizes(), (std::vector<int64_t>{3, 8}));
  }
}

// model.depth: each stage holds `depth` conv-BN layers (3 x 3, no bias); depth 1 keeps the names
// of checkpoints written before the option, and the map halves once per stage past the first.
TEST(Models, SmallCnnDepthStacksLayersPerStage) {
  ModelConfig config;
  config.in_channels = 1;
  config.width = 4;
  config.low_dim = 8;
  for (const int64_t depth : {1, 3}) {
    config.depth = depth;
    EmbeddingNet net(config, nullptr);
    std::set<std::string> keys;
    int64_t conv_weights = 0;
    for (const auto& p : net->named_parameters()) {
      keys.insert(p.key());
      if (p.value().dim() == 4) {
        conv_weights += p.value().numel();
      }
    }
    // channels 1 -> 4 -> 8 -> 16 -> 32, then (depth - 1) c -> c layers in each stage.
    int64_t expected = 9 * (1 * 4 + 4 * 8 + 8 * 16 + 16 * 32);
    for (const int64_t c : {4, 8, 16, 32}) {
      expected += (depth - 1) * 9 * c * c;
    }
    EXPECT_EQ(conv_weights, expected) << "depth " << depth;
    EXPECT_TRUE(keys.count("backbone.conv3.weight") && keys.count("backbone.bn3.bn.weight"));
    EXPECT_EQ(
        keys.count("backbone.conv3_2.weight") + keys.count("backbone.bn3_2.bn.bias"),
        depth == 3 ? 2u : 0u);
    EXPECT_EQ(keys.count("backbone.conv0_1.weight"), depth == 3 ? 1u : 0u);
    EXPECT_EQ(net->features(torch::randn({2, 1, 28, 28})).sizes(), (std::vector<int64_t>{2, 32}));
  }
  config.depth = 0;
  EXPECT_THROW_WITH(EmbeddingNet(config, nullptr), ConfigError, "--model.depth");
}

// model.head_hidden: the embedding is normalize(W2 relu(BN(W1 f)) + b2), BN over the batch in
// training; 0 keeps the single linear head and its checkpoint names.
TEST(Models, HeadHiddenIsLinearBatchNormReluBeforeTheHead) {
  ModelConfig config;
  config.in_channels = 1;
  config.width = 4;
  config.low_dim = 8;
  config.head_hidden = 6;
  EmbeddingNet net(config, nullptr);
  net->to(at::kDouble);
  std::map<std::string, at::Tensor> p;
  for (const auto& item : net->named_parameters())
    p[item.key()] = item.value();
  ASSERT_EQ(p.size(), 17u);  // 4 conv + 4 x 2 BN in the backbone, 3 in the hidden layer, 2 head
  const at::Tensor w1 = p.at("head_hidden.0.weight");
  ASSERT_EQ(w1.sizes(), (std::vector<int64_t>{6, 32}));
  ASSERT_EQ(p.at("head.weight").sizes(), (std::vector<int64_t>{8, 6}));
  torch::NoGradGuard no_grad;
  p.at("head_hidden.1.weight").uniform_(0.5, 1.5);
  p.at("head_hidden.1.bias").uniform_(-0.5, 0.5);
  const at::Tensor x = torch::randn({5, 1, 28, 28}, at::kDouble);
  const at::Tensor f = net->features(x);
  const at::Tensor z = f.matmul(w1.t());
  const at::Tensor bn = (z - z.mean(0)) / (z.var(0, /*unbiased=*/false) + 1e-5).sqrt() *
                            p.at("head_hidden.1.weight") +
                        p.at("head_hidden.1.bias");
  at::Tensor e = bn.relu().matmul(p.at("head.weight").t()) + p.at("head.bias");
  e = e / e.norm(2, 1, true);
  EXPECT_TRUE(torch::allclose(net->forward(x), e, 1e-12, 1e-12));

  config.head_hidden = 0;
  EmbeddingNet linear(config, nullptr);
  std::set<std::string> keys;
  for (const auto& item : linear->named_parameters())
    keys.insert(item.key());
  EXPECT_EQ(keys.size(), 14u);
  EXPECT_TRUE(keys.count("head.weight") && keys.count("head.bias"));
  config.head_hidden = -1;
  EXPECT_THROW_WITH(EmbeddingNet(config, nullptr), ConfigError, "--model.head_hidden");
}

TEST(Models, ResNetParameterNamesFollowTorchvision) {
  ModelConfig config;
  config.arch = "resnet18";
  EmbeddingNet net(config, nullptr);
  bool found = false;
  for (const auto& p : net->named_parameters()) {
    found = found || p.key() == "backbone.layer2.0.shortcut_conv.weight";
  }
  EXPECT_TRUE(found);
  // 11.2M backbone parameters, as torchvision's ResNet-18 without its classifier.
  int64_t count = 0;
  for (const auto& p : net->named_parameters()) {
    if (p.key().rfind("backbone.", 0) == 0)
      count += p.value().numel();
  }
  EXPECT_EQ(count, 11168832);
}

TEST(Models, WeightsRoundTripAndMismatchesAreErrors) {
  test::ScratchDir dir;
  ModelConfig config;
  config.in_channels = 1;
  config.width = 4;
  torch::manual_seed(1);
  EmbeddingNet a(config, nullptr);
  save_weights(*a, dir.file("w.pt"));
  torch::manual_seed(2);
  EmbeddingNet b(config, nullptr);
  EXPECT_TRUE(load_weights(*b, dir.file("w.pt"), /*strict=*/true).empty());
  at::Tensor x = torch::randn({3, 1, 28, 28});
  a->eval();
  b->eval();
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));

  config.low_dim = 64;  // a different head
  EmbeddingNet c(config, nullptr);
  EXPECT_THROW_WITH(
      load_weights(*c, dir.file("w.pt"), true), DataError, "'head.weight' has shape [128, 32]");
  EXPECT_THROW_WITH(load_weights(*c, dir.file("none.pt"), true), DataError, "does not exist");
  test::write_bytes(dir.file("junk.pt"), {1, 2, 3});
  EXPECT_THROW_WITH(
      load_weights(*c, dir.file("junk.pt"), true), DataError, "not a LibTorch weights archive");
}

// use_channels_last restrides every convolution weight to NHWC, the first one with a single input
// channel too (whose NCHW strides would also pass as channels-last), keeps every value, so the
// outputs match the NCHW network's to float32 rounding, and its weights round-trip through a file
// (loaded into a channels-last network, saved from one).
TEST(Models, ChannelsLastKeepsValuesAndWeights) {
  test::ScratchDir dir;
  ModelConfig config;
  config.in_channels = 1;
  config.width = 8;
  torch::manual_seed(1);
  EmbeddingNet nchw(config, nullptr);
  torch::manual_seed(1);
  EmbeddingNet nhwc(config, nullptr);
  use_channels_last(*nhwc);
  int64_t convs = 0;
  for (const auto& p : nhwc->named_parameters()) {
    if (p.value().dim() != 4)
      continue;
    ++convs;
    EXPECT_TRUE(p.value().is_contiguous(at::MemoryFormat::ChannelsLast)) << p.key();
    EXPECT_EQ(p.value().stride(1), 1) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), nchw->named_parameters()[p.key()])) << p.key();
  }
  EXPECT_EQ(convs, 4);
  const at::Tensor x = torch::randn({6, 1, 28, 28});
  const at::Tensor expected = nchw->forward(x);
  EXPECT_TRUE(torch::allclose(nhwc->forward(x), expected, 1e-4, 1e-5));

  save_weights(*nchw, dir.file("nchw.pt"));
  torch::manual_seed(2);
  EmbeddingNet loaded(config, nullptr);
  use_channels_last(*loaded);
  EXPECT_TRUE(load_weights(*loaded, dir.file("nchw.pt"), /*strict=*/true).empty());
  save_weights(*loaded, dir.file("nhwc.pt"));
  torch::manual_seed(3);
  EmbeddingNet back(config, nullptr);
  EXPECT_TRUE(load_weights(*back, dir.file("nhwc.pt"), /*strict=*/true).empty());
  for (const auto& p : back->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), nchw->named_parameters()[p.key()])) << p.key();
}

// A GPU run's weights (storages tagged cuda:0) load on a machine without a GPU, for uel eval and
// embed, and on any device.
TEST(Models, WeightsSavedOnAGpuLoadOnTheCpu) {
  test::ScratchDir dir;
  ModelConfig config;
  config.in_channels = 1;
  config.width = 4;
  torch::manual_seed(1);
  EmbeddingNet a(config, nullptr);
  save_weights(*a, dir.file("w.pt"));
  test::retag_archive_device(dir.file("w.pt"), dir.file("gpu.pt"), "cuda:0");
  if (!torch::cuda::is_available()) {  // the tag is real: read where it was saved, it fails here
    torch::serialize::InputArchive archive;
    EXPECT_ANY_THROW(archive.load_from(dir.file("gpu.pt")));
  }
  torch::manual_seed(2);
  EmbeddingNet b(config, nullptr);
  EXPECT_TRUE(load_weights(*b, dir.file("gpu.pt"), /*strict=*/true).empty());
  at::Tensor x = torch::randn({3, 1, 28, 28});
  a->eval();
  b->eval();
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
}

TEST(Models, FactoryListsTheValidNames) {
  ModelConfig config;
  config.arch = "vgg16";
  EXPECT_THROW_WITH(
      make_backbone(config, nullptr), ConfigError, "not one of small_cnn|resnet18|resnet50");
  config.arch = "resnet18";
  config.stem = "tiny";
  EXPECT_THROW_WITH(make_backbone(config, nullptr), ConfigError, "--model.stem='tiny'");
}

}  // namespace
}  // namespace uel::models
