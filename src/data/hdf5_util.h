#pragma once

// RAII handles and error reporting for the HDF5 C API (private to src/data).

#include <hdf5.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace uel::data::h5 {

// HDF5 calls are serialised: Debian's build is thread-safe, others may not be.
std::recursive_mutex& mutex();

// Silences HDF5's own stderr dump; our errors carry its messages instead.
void quiet_errors();
// The outermost and innermost messages of HDF5's current error stack, which is then cleared.
std::string last_error();

class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() {
    reset();
  }
  Handle(Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) {
    other.id_ = H5I_INVALID_HID;
  }
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      closer_ = other.closer_;
      other.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const {
    return id_;
  }
  bool valid() const {
    return id_ >= 0;
  }
  // Closes now and reports failure (a close can flush, so it can fail).
  herr_t close();
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) {
      closer_(id_);
    }
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

bool has_attribute(hid_t object, const char* name);
std::string read_string_attribute(hid_t object, const char* name);
std::vector<std::string> read_string_array_attribute(hid_t object, const char* name);
int64_t read_int_attribute(hid_t object, const char* name);
double read_double_attribute(hid_t object, const char* name);

void write_string_attribute(hid_t object, const char* name, const std::string& value);
void write_string_array_attribute(
    hid_t object, const char* name, const std::vector<std::string>& values);
void write_int_attribute(hid_t object, const char* name, int64_t value);
void write_double_attribute(hid_t object, const char* name, double value);

// Creates `path` through a temporary file renamed into place once `fill` has written it and it
// is closed: readers never see a partial file, and a failure leaves any old file as it was.
void write_file_atomically(const std::string& path, const std::function<void(hid_t file)>& fill);
// A contiguous dataset `name` of shape `dims` stored as `file_type`, from `memory_type` values.
void write_array(
    hid_t file,
    const char* name,
    hid_t file_type,
    hid_t memory_type,
    const std::vector<hsize_t>& dims,
    const void* data);

}  // namespace uel::data::h5
