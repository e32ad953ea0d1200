#include "method_file.h"

#include <filesystem>

#include "uel/core/error.h"

namespace uel::methods {

namespace fs = std::filesystem;

void save_method_file(
    torch::serialize::OutputArchive& archive, const std::string& dir, const std::string& file) {
  const std::string path = (fs::path(dir) / file).string();
  archive.save_to(path + ".tmp");
  fs::rename(path + ".tmp", path);
}

std::string load_method_file(
    torch::serialize::InputArchive& archive,
    const std::string& dir,
    const std::string& file,
    const std::string& method) {
  const std::string path = (fs::path(dir) / file).string();
  UEL_CHECK_DATA(
      fs::exists(path),
      "'{}' has no {}: it was not saved by --train.method={}; start from its weights with "
      "--model.weights={}/model.pt instead",
      dir,
      file,
      method,
      dir);
  archive.load_from(path, c10::Device(c10::kCPU));  // saved from the CPU; read there on any run
  return path;
}

}  // namespace uel::methods
