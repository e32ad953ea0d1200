#pragma once

// A method's own checkpoint file (udml.pt, margin.pt): one LibTorch archive in the checkpoint
// folder, written by rank 0 (private to src/methods).

#include <string>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

namespace uel::methods {

// Written through a temporary file renamed into place.
void save_method_file(
    torch::serialize::OutputArchive& archive, const std::string& dir, const std::string& file);
// Reads DIR/FILE into `archive` and returns its path (for messages); a DataError naming
// --train.method=`method` when the checkpoint has no such file.
std::string load_method_file(
    torch::serialize::InputArchive& archive,
    const std::string& dir,
    const std::string& file,
    const std::string& method);

}  // namespace uel::methods
