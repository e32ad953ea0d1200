#include "uel/data/row_shard.h"

#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "hdf5_util.h"
#include "uel/core/error.h"

namespace uel::data {

namespace fs = std::filesystem;
using h5::Handle;

std::string row_shard_path(const std::string& dir, int rank) {
  return (fs::path(dir) / fmt::format("shard-{:04d}.h5", rank)).string();
}

void write_row_shard(const std::string& path, const RowShard& shard) {
  const at::Tensor rows = shard.rows.to(at::kCPU).contiguous();
  UEL_CHECK(
      rows.dim() == 2 && (rows.scalar_type() == at::kFloat || rows.scalar_type() == at::kDouble),
      "write_row_shard expects float32 or float64 [n, D] rows, got {} {}",
      c10::str(rows.scalar_type()),
      c10::str(rows.sizes()));
  const bool wide = rows.scalar_type() == at::kDouble;
  h5::write_file_atomically(path, [&](hid_t file) {
    h5::write_array(
        file,
        "rows",
        wide ? H5T_IEEE_F64LE : H5T_IEEE_F32LE,
        wide ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT,
        {hsize_t(rows.size(0)), hsize_t(rows.size(1))},
        rows.data_ptr());
    h5::write_int_attribute(file, "row_begin", shard.begin);
    h5::write_int_attribute(file, "rows_total", shard.total);
    for (const auto& [name, value] : shard.values)
      h5::write_double_attribute(file, name.c_str(), value);
  });
}

RowShard read_rows(
    const std::vector<std::string>& paths, int64_t begin, int64_t end, at::ScalarType dtype) {
  UEL_CHECK(!paths.empty(), "read_rows needs at least one shard file");
  UEL_CHECK(dtype == at::kFloat || dtype == at::kDouble, "read_rows reads float32 or float64 rows");
  std::lock_guard<std::recursive_mutex> lock(h5::mutex());
  h5::quiet_errors();
  RowShard out;
  out.begin = begin;
  int64_t dim = -1, covered = 0;
  for (size_t f = 0; f < paths.size(); ++f) {
    const std::string& path = paths[f];
    UEL_CHECK_DATA(fs::exists(path), "shard file '{}' does not exist", path);
    Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    UEL_CHECK_DATA(file.valid(), "cannot open '{}': {}", path, h5::last_error());
    Handle rows(H5Dopen2(file.get(), "rows", H5P_DEFAULT), H5Dclose);
    UEL_CHECK_DATA(rows.valid(), "'{}' has no /rows: {}", path, h5::last_error());
    Handle space(H5Dget_space(rows.get()), H5Sclose);
    hsize_t dims[2] = {0, 0};
    UEL_CHECK_DATA(
        H5Sget_simple_extent_ndims(space.get()) == 2 &&
            H5Sget_simple_extent_dims(space.get(), dims, nullptr) == 2,
        "'{}': /rows should be two-dimensional",
        path);
    const int64_t first = h5::read_int_attribute(file.get(), "row_begin");
    const int64_t total = h5::read_int_attribute(file.get(), "rows_total");
    if (f == 0) {
      dim = static_cast<int64_t>(dims[1]);
      out.total = total;
      UEL_CHECK_DATA(
          0 <= begin && begin <= end && end <= total,
          "rows [{}, {}) are outside the {} rows saved in '{}'",
          begin,
          end,
          total,
          path);
      out.rows = at::empty({end - begin, dim}, dtype);
      // Named numbers: every attribute but the two above.
      std::vector<std::string> names;
      H5Aiterate2(
          file.get(),
          H5_INDEX_NAME,
          H5_ITER_INC,
          nullptr,
          [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
            static_cast<std::vector<std::string>*>(data)->emplace_back(name);
            return 0;
          },
          &names);
      for (const std::string& name : names) {
        if (name != "row_begin" && name != "rows_total")
          out.values[name] = h5::read_double_attribute(file.get(), name.c_str());
      }
    }
    UEL_CHECK_DATA(
        total == out.total && static_cast<int64_t>(dims[1]) == dim,
        "'{}' holds rows of a {} x {} matrix, '{}' of a {} x {}: shards of different saves",
        path,
        total,
        dims[1],
        paths[0],
        out.total,
        dim);
    // The overlap of this file's rows with [begin, end).
    const int64_t lo = std::max(begin, first);
    const int64_t hi = std::min(end, first + static_cast<int64_t>(dims[0]));
    if (lo >= hi)
      continue;
    const hsize_t offset[2] = {hsize_t(lo - first), 0};
    const hsize_t count[2] = {hsize_t(hi - lo), hsize_t(dim)};
    H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, offset, nullptr, count, nullptr);
    Handle memory(H5Screate_simple(2, count, nullptr), H5Sclose);
    at::Tensor target = out.rows.slice(0, lo - begin, hi - begin);
    UEL_CHECK_DATA(
        H5Dread(
            rows.get(),
            dtype == at::kDouble ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT,
            memory.get(),
            space.get(),
            H5P_DEFAULT,
            target.data_ptr()) >= 0,
        "cannot read rows of '{}': {}",
        path,
        h5::last_error());
    covered += hi - lo;
  }
  UEL_CHECK_DATA(
      covered == end - begin,
      "the shard files hold {} of rows [{}, {}): a shard file is missing or they overlap",
      covered,
      begin,
      end);
  return out;
}

}  // namespace uel::data
