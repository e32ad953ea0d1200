#include <filesystem>

#include "commands.h"
#include "uel/cli/options.h"
#include "uel/core/error.h"
#include "uel/data/convert.h"

namespace uel::cli {

int run_prepare(const Args& args) {
  std::string format, src, out, root, list, name;
  int64_t resize = 256;
  int channels = 3;
  OptionSet options(
      "uel prepare fashion-mnist --src DIR --out DIR\n"
      "       uel prepare cifar10 --src DIR --out DIR        (CIFAR-10 or CIFAR-100 binary)\n"
      "       uel prepare image-list --root DIR --list FILE --out FILE.h5 [--resize 256]");
  options.add_positional("format", &format, "fashion-mnist | cifar10 | image-list");
  options.add("src", &src, "folder holding the downloaded files (fashion-mnist, cifar10)");
  options.add("out", &out, "output folder (train.h5, test.h5) or, for image-list, the .h5 file");
  options.add("root", &root, "image-list: folder the listed paths are relative to");
  options.add("list", &list, "image-list: text file of `path label` lines");
  options.add(
      "resize",
      &resize,
      "image-list: images are resized to SIZE x SIZE",
      OptionSet::positive<int64_t>());
  options.add("channels", &channels, "image-list: 3 (RGB) or 1 (grayscale)");
  options.add("name", &name, "image-list: dataset name (default: the list's file name)");
  if (!options.parse(args)) {
    return 0;
  }
  UEL_CHECK_CONFIG(!out.empty(), "--out is required; see `uel prepare --help`");
  if (format == "fashion-mnist" || format == "cifar10") {
    UEL_CHECK_CONFIG(!src.empty(), "--src is required for {}", format);
    if (format == "fashion-mnist") {
      data::prepare_fashion_mnist(src, out);
    } else {
      data::prepare_cifar(src, out);
    }
  } else if (format == "image-list") {
    UEL_CHECK_CONFIG(!root.empty() && !list.empty(), "image-list needs --root and --list");
    data::prepare_image_list(
        root,
        list,
        out,
        resize,
        channels,
        name.empty() ? std::filesystem::path(list).stem().string() : name);
  } else {
    UEL_CHECK_CONFIG(
        false, "unknown format '{}'; use fashion-mnist, cifar10 or image-list", format);
  }
  return 0;
}

}  // namespace uel::cli
