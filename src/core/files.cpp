#include "uel/core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "uel/core/error.h"

namespace uel {

// POSIX calls, not streams: they say why a write failed (errno), streams only that it did.
AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  UEL_CHECK_DATA(fd_ >= 0, "cannot write '{}': {}", path_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0)
    ::close(fd_);
  if (!committed_)
    ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0 && error_ == 0) {
    const ssize_t n = ::write(fd_, bytes, size);
    if (n >= 0) {
      bytes += n;
      size -= static_cast<size_t>(n);
    } else if (errno != EINTR) {
      error_ = errno;
    }
  }
}

void AtomicFile::commit() {
  if (::close(fd_) != 0 && error_ == 0)
    error_ = errno;
  fd_ = -1;
  if (error_ == 0 && std::rename(tmp_.c_str(), path_.c_str()) != 0)
    error_ = errno;
  UEL_CHECK_DATA(error_ == 0, "cannot write '{}': {}", path_, std::strerror(error_));
  committed_ = true;
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

}  // namespace uel
