#include "hdf5_util.h"

#include <unistd.h>

#include <filesystem>

#include "uel/core/error.h"

namespace uel::data::h5 {

namespace fs = std::filesystem;

std::recursive_mutex& mutex() {
  static std::recursive_mutex m;
  return m;
}

void quiet_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

namespace {

// Collects the outermost and innermost descriptions of the error stack.
herr_t collect(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::pair<std::string, std::string>*>(data);
  const std::string desc = err->desc != nullptr ? err->desc : "";
  if (n == 0) {
    out->first = desc;
  }
  out->second = desc;
  return 0;
}

Handle open_attribute(hid_t object, const char* name) {
  Handle attr(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  UEL_CHECK_DATA(attr.valid(), "cannot open attribute '{}': {}", name, last_error());
  return attr;
}

// Reads the attribute's strings, variable-length or fixed-size alike.
std::vector<std::string> read_strings(hid_t object, const char* name) {
  Handle attr = open_attribute(object, name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  UEL_CHECK_DATA(
      H5Tget_class(type.get()) == H5T_STRING,
      "attribute '{}' is not a string (write it as str or bytes)",
      name);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  const hssize_t count = H5Sget_simple_extent_npoints(space.get());
  UEL_CHECK_DATA(count >= 0, "attribute '{}' has an unreadable shape", name);
  std::vector<std::string> out;
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    std::vector<char*> raw(static_cast<size_t>(count), nullptr);
    UEL_CHECK_DATA(
        H5Aread(attr.get(), mem.get(), raw.data()) >= 0,
        "cannot read attribute '{}': {}",
        name,
        last_error());
    for (char* s : raw) {
      out.emplace_back(s != nullptr ? s : "");
    }
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), space.get(), H5P_DEFAULT, raw.data());
#else
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, raw.data());
#endif
  } else {
    const size_t width = H5Tget_size(type.get());
    std::vector<char> raw(width * static_cast<size_t>(count));
    UEL_CHECK_DATA(
        H5Aread(attr.get(), type.get(), raw.data()) >= 0,
        "cannot read attribute '{}': {}",
        name,
        last_error());
    for (hssize_t i = 0; i < count; ++i) {
      const char* s = raw.data() + static_cast<size_t>(i) * width;
      size_t len = 0;
      while (len < width && s[len] != '\0') {
        ++len;
      }
      out.emplace_back(s, len);
    }
  }
  return out;
}

Handle variable_string_type() {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

void write_strings(
    hid_t object, const char* name, const std::vector<std::string>& values, bool scalar) {
  Handle type = variable_string_type();
  const hsize_t dims[1] = {values.size()};
  Handle space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, nullptr), H5Sclose);
  Handle attr(
      H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  UEL_CHECK_DATA(attr.valid(), "cannot create attribute '{}': {}", name, last_error());
  std::vector<const char*> raw;
  for (const auto& v : values) {
    raw.push_back(v.c_str());
  }
  UEL_CHECK_DATA(
      H5Awrite(attr.get(), type.get(), raw.data()) >= 0,
      "cannot write attribute '{}': {}",
      name,
      last_error());
}

}  // namespace

std::string last_error() {
  std::pair<std::string, std::string> ends;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect, &ends);
  H5Eclear2(H5E_DEFAULT);
  if (ends.first.empty()) {
    return "unknown HDF5 error";
  }
  return ends.first == ends.second ? ends.first : ends.first + ": " + ends.second;
}

herr_t Handle::close() {
  herr_t rc = 0;
  if (id_ >= 0 && closer_ != nullptr) {
    rc = closer_(id_);
  }
  id_ = H5I_INVALID_HID;
  return rc;
}

bool has_attribute(hid_t object, const char* name) {
  return H5Aexists(object, name) > 0;
}

std::string read_string_attribute(hid_t object, const char* name) {
  auto values = read_strings(object, name);
  UEL_CHECK_DATA(values.size() == 1, "attribute '{}' should hold one string", name);
  return values.front();
}

std::vector<std::string> read_string_array_attribute(hid_t object, const char* name) {
  return read_strings(object, name);
}

namespace {

// One number of HDF5 class `kind` read as `memory_type`.
void read_scalar(hid_t object, const char* name, H5T_class_t kind, hid_t memory_type, void* value) {
  Handle attr = open_attribute(object, name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  UEL_CHECK_DATA(
      H5Tget_class(type.get()) == kind,
      "attribute '{}' should be {}",
      name,
      kind == H5T_INTEGER ? "an integer" : "a number");
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  UEL_CHECK_DATA(
      H5Sget_simple_extent_npoints(space.get()) == 1, "attribute '{}' should hold one value", name);
  UEL_CHECK_DATA(
      H5Aread(attr.get(), memory_type, value) >= 0,
      "cannot read attribute '{}': {}",
      name,
      last_error());
}

void write_scalar(
    hid_t object, const char* name, hid_t file_type, hid_t memory_type, const void* value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  UEL_CHECK_DATA(attr.valid(), "cannot create attribute '{}': {}", name, last_error());
  UEL_CHECK_DATA(
      H5Awrite(attr.get(), memory_type, value) >= 0,
      "cannot write attribute '{}': {}",
      name,
      last_error());
}

}  // namespace

int64_t read_int_attribute(hid_t object, const char* name) {
  int64_t value = 0;
  read_scalar(object, name, H5T_INTEGER, H5T_NATIVE_INT64, &value);
  return value;
}

double read_double_attribute(hid_t object, const char* name) {
  double value = 0;
  read_scalar(object, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, &value);
  return value;
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  write_strings(object, name, {value}, /*scalar=*/true);
}

void write_string_array_attribute(
    hid_t object, const char* name, const std::vector<std::string>& values) {
  write_strings(object, name, values, /*scalar=*/false);
}

void write_int_attribute(hid_t object, const char* name, int64_t value) {
  write_scalar(object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void write_double_attribute(hid_t object, const char* name, double value) {
  write_scalar(object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void write_file_atomically(const std::string& path, const std::function<void(hid_t file)>& fill) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  quiet_errors();
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty())
    fs::create_directories(parent);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  try {
    Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    UEL_CHECK_DATA(file.valid(), "cannot create '{}': {}", tmp, last_error());
    fill(file.get());
    UEL_CHECK_DATA(file.close() >= 0, "cannot write '{}' (disk full?): {}", tmp, last_error());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  UEL_CHECK_DATA(!ec, "cannot move '{}' to '{}': {}", tmp, path, ec.message());
}

void write_array(
    hid_t file,
    const char* name,
    hid_t file_type,
    hid_t memory_type,
    const std::vector<hsize_t>& dims,
    const void* data) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle array(
      H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
      H5Dclose);
  UEL_CHECK_DATA(
      array.valid() && H5Dwrite(array.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
      "cannot write '{}' (disk full?): {}",
      name,
      last_error());
}

}  // namespace uel::data::h5
