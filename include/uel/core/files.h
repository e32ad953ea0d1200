#pragma once

// Files that are whole or absent: checkpoints, a run's config.ini and metrics are written through
// a temporary file renamed over the final name, so a full disk or a quota never leaves a
// truncated file under that name.

#include <cstddef>
#include <string>

namespace uel {

class AtomicFile {
 public:
  // Opens `path`.tmp for writing (DataError when it cannot be created).
  explicit AtomicFile(std::string path);
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Never throws: the first failure is kept for commit() and later writes are skipped, so
  // writers that cannot take an exception (LibTorch's archive writer) can call it.
  void write(const void* data, size_t size);
  // Renames the temporary file over `path`, or throws DataError naming `path` and the system's
  // reason (e.g. "No space left on device"), leaving `path` as it was.
  void commit();

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  int error_ = 0;  // errno of the first failure
  bool committed_ = false;
};

void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace uel
