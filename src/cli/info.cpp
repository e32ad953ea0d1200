#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "uel/cli/options.h"
#include "uel/data/dataset.h"

namespace uel::cli {

int run_info(const Args& args) {
  std::string file;
  OptionSet options("uel info FILE.h5");
  options.add_positional("file", &file, "dataset file to describe");
  if (!options.parse(args)) {
    return 0;
  }
  // Labels are needed for the per-class counts; images stay on disk.
  data::ImageDataset dataset(file, /*max_memory_bytes=*/0);
  const data::DatasetInfo& info = dataset.info();
  std::vector<int64_t> counts(info.num_classes, 0);
  for (int64_t label : dataset.labels()) {
    ++counts[label];
  }
  std::string text = fmt::format(
      "file: {}\nkind: dataset\nname: {}\nimages: {} x {}x{}x{} uint8\nclasses: {}\n",
      info.path,
      info.name,
      info.size,
      info.height,
      info.width,
      info.channels,
      info.num_classes);
  for (int64_t c = 0; c < info.num_classes; ++c) {
    text += fmt::format("  {:>4} {:<24} {}\n", c, info.class_names[c], counts[c]);
  }
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace uel::cli
