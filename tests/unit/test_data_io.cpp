#include <filesystem>
#include <fstream>
#include <numeric>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include "test_util.h"
#include "uel/core/error.h"
#include "uel/data/convert.h"
#include "uel/data/dataset.h"
#include "uel/data/image_io.h"
#include "uel/data/row_shard.h"

namespace uel::data {
namespace {

namespace fs = std::filesystem;
using test::ScratchDir;

std::vector<uint8_t> ramp(size_t n, int mul = 1) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>((i * mul) % 251);
  return v;
}

// A small Fashion-MNIST-like folder: n_train/n_test images of 4x3 with labels i % 10.
void write_fake_fmnist(const ScratchDir& dir, int64_t n_train, int64_t n_test, bool gzip) {
  for (auto [prefix, n] : {std::pair<std::string, int64_t>{"train", n_train}, {"t10k", n_test}}) {
    std::vector<uint8_t> labels(n);
    for (int64_t i = 0; i < n; ++i)
      labels[i] = static_cast<uint8_t>(i % 10);
    const std::string suffix = gzip ? ".gz" : "";
    test::write_bytes(
        dir.file(prefix + "-images-idx3-ubyte" + suffix),
        test::idx_bytes({n, 4, 3}, ramp(n * 12)),
        gzip);
    test::write_bytes(
        dir.file(prefix + "-labels-idx1-ubyte" + suffix), test::idx_bytes({n}, labels), gzip);
  }
}

// Writes a raw HDF5 file with the given /images dtype and shape and /labels values.
void write_raw_h5(
    const std::string& path,
    hid_t image_type,
    std::vector<hsize_t> dims,
    const std::vector<int64_t>& labels) {
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t s = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t d = H5Dcreate2(f, "images", image_type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  size_t count = 1;
  for (auto x : dims)
    count *= x;
  std::vector<double> zeros(count, 0.0);
  H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
  H5Dclose(d);
  H5Sclose(s);
  hsize_t n = labels.size();
  s = H5Screate_simple(1, &n, nullptr);
  d = H5Dcreate2(f, "labels", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (n > 0)
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels.data());
  H5Dclose(d);
  H5Sclose(s);
  H5Fclose(f);
}

TEST(Idx, ReadsPlainAndGzipped) {
  ScratchDir dir;
  const auto values = ramp(24);
  test::write_bytes(dir.file("a"), test::idx_bytes({2, 3, 4}, values));
  test::write_bytes(dir.file("a.gz"), test::idx_bytes({2, 3, 4}, values), /*gzip=*/true);
  for (const char* name : {"a", "a.gz"}) {
    IdxArray idx = read_idx(dir.file(name));
    EXPECT_EQ(idx.dims, (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(idx.values, values);
  }
}

TEST(Idx, RejectsBadFiles) {
  ScratchDir dir;
  auto good = test::idx_bytes({2, 3, 4}, ramp(24));
  auto truncated = good;
  truncated.resize(truncated.size() - 5);
  test::write_bytes(dir.file("truncated"), truncated);
  EXPECT_THROW_WITH(
      read_idx(dir.file("truncated")),
      DataError,
      "should hold 24 values after its header but holds 19");
  auto magic = good;
  magic[0] = 0x12;
  test::write_bytes(dir.file("magic"), magic);
  EXPECT_THROW_WITH(read_idx(dir.file("magic")), DataError, "not an IDX file");
  auto dtype = good;
  dtype[2] = 0x0D;  // float
  test::write_bytes(dir.file("dtype"), dtype);
  EXPECT_THROW_WITH(read_idx(dir.file("dtype")), DataError, "only unsigned bytes");
  EXPECT_THROW_WITH(read_idx(dir.file("missing")), DataError, "does not exist");
  // A gzip stream cut in the middle.
  test::write_bytes(dir.file("cut.gz"), good, true);
  auto gz = test::read_bytes(dir.file("cut.gz"));
  gz.resize(gz.size() / 2);
  test::write_bytes(dir.file("cut.gz"), gz);
  EXPECT_THROW(read_idx(dir.file("cut.gz")), DataError);
}

TEST(PrepareFashionMnist, ConvertsIdxToTheSchema) {
  ScratchDir src, out;
  write_fake_fmnist(src, 30, 20, /*gzip=*/true);
  auto written = prepare_fashion_mnist(src.path().string(), out.file("fm"));
  ASSERT_EQ(written.size(), 2u);
  ImageDataset train(out.file("fm/train.h5"));
  EXPECT_EQ(train.info().name, "fashion-mnist");
  EXPECT_EQ(train.size(), 30);
  EXPECT_EQ(train.info().height, 4);
  EXPECT_EQ(train.info().width, 3);
  EXPECT_EQ(train.info().channels, 1);
  EXPECT_EQ(train.info().num_classes, 10);
  EXPECT_EQ(train.info().class_names[9], "Ankle boot");
  for (int64_t i = 0; i < 30; ++i)
    EXPECT_EQ(train.labels()[i], i % 10);
  // Pixel values survive exactly: image 7, row 2, column 1 is value 7*12 + 2*3 + 1.
  at::Tensor img = train.read({7});
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{1, 4, 3, 1}));
  EXPECT_EQ(img[0][2][1][0].item<uint8_t>(), ramp(30 * 12)[7 * 12 + 2 * 3 + 1]);
  EXPECT_EQ(ImageDataset(out.file("fm/test.h5")).size(), 20);
}

TEST(PrepareFashionMnist, BadInputLeavesExistingOutputUntouched) {
  ScratchDir src, out;
  write_fake_fmnist(src, 30, 20, /*gzip=*/false);
  prepare_fashion_mnist(src.path().string(), out.path().string());
  const auto before = test::read_bytes(out.file("train.h5"));
  // Labels beyond the 10 classes, in the test split: train.h5 must not be rewritten either.
  std::vector<uint8_t> labels(20, 3);
  labels[5] = 12;
  test::write_bytes(src.file("t10k-labels-idx1-ubyte"), test::idx_bytes({20}, labels));
  EXPECT_THROW_WITH(
      prepare_fashion_mnist(src.path().string(), out.path().string()),
      DataError,
      "label 12 of item 5");
  EXPECT_EQ(test::read_bytes(out.file("train.h5")), before);
  // Image and label counts that disagree.
  test::write_bytes(
      src.file("t10k-labels-idx1-ubyte"), test::idx_bytes({19}, std::vector<uint8_t>(19, 1)));
  EXPECT_THROW_WITH(
      prepare_fashion_mnist(src.path().string(), out.path().string()),
      DataError,
      "has 20 images but");
  EXPECT_THROW_WITH(
      prepare_fashion_mnist(out.file("nowhere"), out.path().string()),
      DataError,
      "is not a folder");
  for (const auto& entry : fs::directory_iterator(out.path())) {
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos)
        << "left behind " << entry.path();
  }
}

TEST(PrepareCifar, ConvertsCifar10AndCifar100Records) {
  ScratchDir src, out;
  // CIFAR-10: record = label + 1024 R + 1024 G + 1024 B.
  auto record10 = [](uint8_t label, uint8_t base) {
    std::vector<uint8_t> r = {label};
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p)
        r.push_back(static_cast<uint8_t>(base + c * 50 + p % 7));
    return r;
  };
  for (int b = 1; b <= 5; ++b) {
    std::vector<uint8_t> bytes;
    for (int i = 0; i < 2; ++i) {
      auto r = record10(static_cast<uint8_t>((b + i) % 10), static_cast<uint8_t>(b));
      bytes.insert(bytes.end(), r.begin(), r.end());
    }
    test::write_bytes(src.file("data_batch_" + std::to_string(b) + ".bin"), bytes);
  }
  test::write_bytes(src.file("test_batch.bin"), record10(9, 100));
  std::ofstream(src.file("batches.meta.txt"))
      << "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
  prepare_cifar(src.path().string(), out.path().string());
  ImageDataset train(out.file("train.h5"));
  EXPECT_EQ(train.size(), 10);
  EXPECT_EQ(train.info().channels, 3);
  EXPECT_EQ(train.info().class_names[1], "automobile");
  EXPECT_EQ(train.labels()[0], 1);
  at::Tensor img = train.read({0});  // batch 1, base 1: pixel (row 0, col 3) = base + c*50 + 3
  EXPECT_EQ(img[0][0][3][0].item<uint8_t>(), 1 + 3);
  EXPECT_EQ(img[0][0][3][2].item<uint8_t>(), 1 + 100 + 3);
  EXPECT_EQ(ImageDataset(out.file("test.h5")).labels()[0], 9);

  // CIFAR-100: coarse + fine label bytes; the fine label is kept.
  ScratchDir src100, out100;
  std::vector<uint8_t> rec = {3, 77};
  rec.resize(3074, 5);
  test::write_bytes(src100.file("train.bin"), rec);
  test::write_bytes(src100.file("test.bin"), rec);
  prepare_cifar(src100.path().string(), out100.path().string());
  ImageDataset c100(out100.file("train.h5"));
  EXPECT_EQ(c100.info().num_classes, 100);
  EXPECT_EQ(c100.labels()[0], 77);

  // A truncated batch is refused.
  rec.resize(3000);
  test::write_bytes(src100.file("test.bin"), rec);
  EXPECT_THROW_WITH(
      prepare_cifar(src100.path().string(), out100.path().string()),
      DataError,
      "not a whole number");
}

TEST(ImageIo, DecodesPngAndJpegWithChannelConversion) {
  ScratchDir dir;
  std::vector<uint8_t> rgb(6 * 5 * 3);
  for (size_t i = 0; i < rgb.size(); ++i)
    rgb[i] = static_cast<uint8_t>(i * 7);
  test::write_png(dir.file("a.png"), 6, 5, 3, rgb);
  at::Tensor png = decode_image(dir.file("a.png"), 3);
  EXPECT_EQ(png.sizes(), (std::vector<int64_t>{6, 5, 3}));
  EXPECT_TRUE(at::equal(png, at::from_blob(rgb.data(), {6, 5, 3}, at::kByte)));
  EXPECT_EQ(decode_image(dir.file("a.png"), 1).sizes(), (std::vector<int64_t>{6, 5, 1}));

  std::vector<uint8_t> flat(8 * 8, 128);
  test::write_jpeg(dir.file("g.jpg"), 8, 8, 1, flat);
  at::Tensor jpg = decode_image(dir.file("g.jpg"), 3);  // grayscale JPEG, RGB requested
  EXPECT_EQ(jpg.sizes(), (std::vector<int64_t>{8, 8, 3}));
  EXPECT_LE((jpg.to(at::kInt) - 128).abs().max().item<int>(), 1);  // quality 100

  test::write_bytes(dir.file("bad.jpg"), {0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 'J', 'F'});
  EXPECT_THROW_WITH(decode_image(dir.file("bad.jpg"), 3), DataError, "cannot decode JPEG");
  test::write_bytes(dir.file("x.gif"), {'G', 'I', 'F', '8', '9', 'a', 0, 0});
  EXPECT_THROW_WITH(decode_image(dir.file("x.gif"), 3), DataError, "neither a JPEG nor a PNG");
}

TEST(ImageIo, ResizeKeepsConstantsAndShapes) {
  at::Tensor img = at::full({10, 20, 3}, 77, at::kByte);
  at::Tensor r = resize_image(img, 7, 5);
  EXPECT_EQ(r.sizes(), (std::vector<int64_t>{7, 5, 3}));
  EXPECT_TRUE(at::equal(r, at::full({7, 5, 3}, 77, at::kByte)));
}

TEST(PrepareImageList, DecodesResizesAndMapsLabels) {
  ScratchDir dir;
  fs::create_directories(dir.path() / "imgs");
  test::write_png(dir.file("imgs/a.png"), 10, 12, 3, std::vector<uint8_t>(10 * 12 * 3, 200));
  test::write_jpeg(dir.file("imgs/b.jpg"), 9, 9, 3, std::vector<uint8_t>(9 * 9 * 3, 50));
  test::write_png(dir.file("imgs/c.png"), 4, 4, 1, std::vector<uint8_t>(16, 10));
  std::ofstream(dir.file("list.txt"))
      << "# CUB-style list\nimgs/a.png 12\nimgs/b.jpg 3\n\nimgs/c.png 12\n";
  prepare_image_list(
      dir.path().string(), dir.file("list.txt"), dir.file("out/set.h5"), 8, 3, "toy");
  ImageDataset d(dir.file("out/set.h5"));
  EXPECT_EQ(d.size(), 3);
  EXPECT_EQ(d.info().height, 8);
  EXPECT_EQ(d.info().name, "toy");
  // Numeric labels sort numerically: 3 -> 0, 12 -> 1.
  EXPECT_EQ(d.info().class_names, (std::vector<std::string>{"3", "12"}));
  EXPECT_EQ(d.labels(), (std::vector<int64_t>{1, 0, 1}));
  at::Tensor imgs = d.read({0, 1, 2});
  EXPECT_EQ(imgs[0].min().item<uint8_t>(), 200);
  EXPECT_NEAR(imgs[1].to(at::kFloat).mean().item<float>(), 50, 1.5);
  EXPECT_EQ(imgs[2].max().item<uint8_t>(), 10);  // grayscale expanded to RGB

  std::ofstream(dir.file("bad.txt")) << "imgs/a.png 1\nimgs/missing.png 2\n";
  EXPECT_THROW_WITH(
      prepare_image_list(
          dir.path().string(), dir.file("bad.txt"), dir.file("out/set.h5"), 8, 3, "t"),
      DataError,
      "bad.txt:2: image");
  std::ofstream(dir.file("cols.txt")) << "imgs/a.png\n";
  EXPECT_THROW_WITH(
      prepare_image_list(
          dir.path().string(), dir.file("cols.txt"), dir.file("out/set.h5"), 8, 3, "t"),
      DataError,
      "expected `path label`");
  std::ofstream(dir.file("empty.txt")) << "# nothing\n";
  EXPECT_THROW_WITH(
      prepare_image_list(
          dir.path().string(), dir.file("empty.txt"), dir.file("out/set.h5"), 8, 3, "t"),
      DataError,
      "empty dataset");
  // A corrupt image fails the conversion and the earlier output survives intact.
  const auto before = test::read_bytes(dir.file("out/set.h5"));
  test::write_bytes(dir.file("imgs/c.png"), {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 1, 2});
  EXPECT_THROW_WITH(
      prepare_image_list(
          dir.path().string(), dir.file("list.txt"), dir.file("out/set.h5"), 8, 3, "t"),
      DataError,
      "cannot decode PNG");
  EXPECT_EQ(test::read_bytes(dir.file("out/set.h5")), before);
}

TEST(ImageDataset, OnDemandReadsEqualInMemoryReads) {
  ScratchDir dir;
  {
    DatasetWriter w(dir.file("d.h5"), 5, 4, 3, "d", {"a", "b", "c"});
    at::Tensor imgs =
        at::arange(700 * 60, at::kInt).remainder(256).to(at::kByte).view({700, 5, 4, 3});
    std::vector<int64_t> labels(700);
    for (int i = 0; i < 700; ++i)
      labels[i] = i % 3;
    w.append(imgs.slice(0, 0, 300), std::vector<int64_t>(labels.begin(), labels.begin() + 300));
    w.append(imgs.slice(0, 300), std::vector<int64_t>(labels.begin() + 300, labels.end()));
    w.commit();
  }
  ImageDataset memory(dir.file("d.h5"));
  ImageDataset disk(dir.file("d.h5"), /*max_memory_bytes=*/0);
  EXPECT_TRUE(memory.in_memory());
  EXPECT_FALSE(disk.in_memory());
  const std::vector<int64_t> idx = {699, 3, 4, 5, 3, 0, 350};
  EXPECT_TRUE(at::equal(memory.read(idx), disk.read(idx)));
  EXPECT_EQ(memory.read({350})[0][0][0][0].item<uint8_t>(), (350 * 60) % 256);
  EXPECT_THROW(disk.read({700}), Error);
}

TEST(ImageDataset, RejectsMalformedFiles) {
  ScratchDir dir;
  EXPECT_THROW_WITH(ImageDataset(dir.file("none.h5")), DataError, "does not exist");
  test::write_bytes(dir.file("junk.h5"), {1, 2, 3, 4, 5, 6, 7, 8, 9});
  EXPECT_THROW_WITH(ImageDataset(dir.file("junk.h5")), DataError, "not a readable HDF5 file");
  write_raw_h5(dir.file("float.h5"), H5T_IEEE_F32LE, {2, 4, 4, 1}, {0, 1});
  EXPECT_THROW_WITH(ImageDataset(dir.file("float.h5")), DataError, "must be uint8");
  write_raw_h5(dir.file("rank3.h5"), H5T_STD_U8LE, {2, 4, 4}, {0, 1});
  EXPECT_THROW_WITH(ImageDataset(dir.file("rank3.h5")), DataError, "must have 4 dimensions");
  write_raw_h5(dir.file("empty.h5"), H5T_STD_U8LE, {0, 4, 4, 1}, {});
  EXPECT_THROW_WITH(ImageDataset(dir.file("empty.h5")), DataError, "empty dataset");
  write_raw_h5(dir.file("neg.h5"), H5T_STD_U8LE, {2, 4, 4, 1}, {0, -1});
  EXPECT_THROW_WITH(ImageDataset(dir.file("neg.h5")), DataError, "outside [0, num_classes=");
  write_raw_h5(dir.file("count.h5"), H5T_STD_U8LE, {3, 4, 4, 1}, {0, 1});
  EXPECT_THROW_WITH(ImageDataset(dir.file("count.h5")), DataError, "has 2 labels for 3 images");

  // Labels beyond the declared num_classes.
  {
    DatasetWriter w(dir.file("ok.h5"), 4, 4, 1, "ok", {"a", "b"});
    w.append(at::zeros({2, 4, 4, 1}, at::kByte), {0, 1});
    w.commit();
    hid_t f = H5Fopen(dir.file("ok.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "labels", H5P_DEFAULT);
    const int64_t bad[2] = {0, 5};
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad);
    H5Dclose(d);
    H5Fclose(f);
  }
  EXPECT_THROW_WITH(
      ImageDataset(dir.file("ok.h5")), DataError, "labels in [0, 5], outside [0, num_classes=2)");

  // A real file cut short.
  {
    DatasetWriter w(dir.file("big.h5"), 28, 28, 1, "big", {"a"});
    w.append(at::ones({2000, 28, 28, 1}, at::kByte), std::vector<int64_t>(2000, 0));
    w.commit();
  }
  auto bytes = test::read_bytes(dir.file("big.h5"));
  bytes.resize(bytes.size() / 2);
  test::write_bytes(dir.file("big.h5"), bytes);
  EXPECT_THROW(ImageDataset(dir.file("big.h5")), DataError);
}

TEST(DatasetWriter, UncommittedWriterLeavesNothing) {
  ScratchDir dir;
  {
    DatasetWriter w(dir.file("x.h5"), 2, 2, 1, "x", {"a"});
    w.append(at::zeros({1, 2, 2, 1}, at::kByte), {0});
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
  DatasetWriter empty(dir.file("e.h5"), 2, 2, 1, "e", {"a"});
  EXPECT_THROW_WITH(empty.commit(), DataError, "the dataset is empty");
  DatasetWriter labels(dir.file("l.h5"), 2, 2, 1, "l", {"a"});
  EXPECT_THROW_WITH(
      labels.append(at::zeros({1, 2, 2, 1}, at::kByte), {1}), DataError, "label 1 outside [0, 1)");
}

// A 10 x 3 matrix saved as 3 uneven shards (a 3-rank save) read back as 2 and 1 ranks would.
TEST(RowShard, ReadsAnyRangeAcrossShards) {
  ScratchDir dir;
  const at::Tensor matrix = at::arange(30, at::kDouble).view({10, 3}) / 7;
  const std::vector<std::pair<int64_t, int64_t>> saved = {{0, 4}, {4, 7}, {7, 10}};
  std::vector<std::string> paths;
  for (const auto& [begin, end] : saved) {
    RowShard shard;
    shard.rows = matrix.slice(0, begin, end);
    shard.begin = begin;
    shard.total = 10;
    shard.values["z"] = 2.5;
    paths.push_back(dir.file("shard-" + std::to_string(begin) + ".h5"));
    write_row_shard(paths.back(), shard);
  }
  for (const auto& [begin, end] :
       std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {5, 10}, {0, 10}, {3, 3}, {6, 8}}) {
    const RowShard got = read_rows({paths[2], paths[0], paths[1]}, begin, end, at::kDouble);
    EXPECT_TRUE(at::equal(got.rows, matrix.slice(0, begin, end))) << begin << ".." << end;
    EXPECT_EQ(got.total, 10);
    EXPECT_EQ(got.values.at("z"), 2.5);
  }
  // float64 rows read as float32 are rounded, not reinterpreted.
  EXPECT_TRUE(
      at::allclose(read_rows(paths, 2, 9, at::kFloat).rows, matrix.slice(0, 2, 9).to(at::kFloat)));
  EXPECT_THROW_WITH(
      read_rows({paths[0], paths[2]}, 0, 10, at::kFloat), DataError, "a shard file is missing");
  EXPECT_THROW_WITH(read_rows(paths, 0, 11, at::kFloat), DataError, "outside the 10 rows");
  EXPECT_THROW_WITH(
      read_rows({dir.file("none.h5")}, 0, 1, at::kFloat), DataError, "does not exist");
  RowShard other;
  other.rows = at::zeros({2, 3});
  other.total = 2;
  write_row_shard(dir.file("other.h5"), other);
  EXPECT_THROW_WITH(
      read_rows({paths[0], dir.file("other.h5")}, 0, 2, at::kFloat),
      DataError,
      "shards of different saves");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 4);
}

}  // namespace
}  // namespace uel::data
