#include "hdf5_util.h"

#include "uel/core/error.h"

namespace uel::data::h5 {

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

int64_t read_int_attribute(hid_t object, const char* name) {
  Handle attr = open_attribute(object, name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  UEL_CHECK_DATA(
      H5Tget_class(type.get()) == H5T_INTEGER, "attribute '{}' should be an integer", name);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  UEL_CHECK_DATA(
      H5Sget_simple_extent_npoints(space.get()) == 1, "attribute '{}' should hold one value", name);
  int64_t value = 0;
  UEL_CHECK_DATA(
      H5Aread(attr.get(), H5T_NATIVE_INT64, &value) >= 0,
      "cannot read attribute '{}': {}",
      name,
      last_error());
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
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(
      H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  UEL_CHECK_DATA(attr.valid(), "cannot create attribute '{}': {}", name, last_error());
  UEL_CHECK_DATA(
      H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) >= 0,
      "cannot write attribute '{}': {}",
      name,
      last_error());
}

}  // namespace uel::data::h5
