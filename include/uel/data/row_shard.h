#pragma once

// Row shards of an [N, D] matrix split over ranks (memory-bank checkpoints): one HDF5 file per
// rank holding /rows [n_r, D] (float32 or float64, as the tensor), and attributes row_begin,
// rows_total plus named numbers. A different world size reads its rows back from whichever files
// hold them, so checkpoints re-split.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace uel::data {

struct RowShard {
  at::Tensor rows;    // [end - begin, D]
  int64_t begin = 0;  // first global row
  int64_t total = 0;  // N
  std::map<std::string, double> values;
};

// Rank `rank`'s file in a checkpoint folder: DIR/shard-RRRR.h5.
std::string row_shard_path(const std::string& dir, int rank);

// Written through a temporary file renamed into place.
void write_row_shard(const std::string& path, const RowShard& shard);

// Rows [begin, end) of the matrix whose shards are `paths` (all files of one save, any order),
// as `dtype`; `values` come from the first file. Missing rows or disagreeing files are errors.
RowShard read_rows(
    const std::vector<std::string>& paths, int64_t begin, int64_t end, at::ScalarType dtype);

}  // namespace uel::data
