#pragma once

// One family of typed exceptions and the check macros that throw them. Every message names the
// fix; what() adds file:line and the failed expression for developers, message() is the hint
// alone for errors the user caused (ConfigError, DataError), which is what they see.

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace uel {

class Error : public std::runtime_error {
 public:
  // location: where a check failed ("src/x.cpp:12: check 'cond' failed"), empty if unknown.
  explicit Error(const std::string& message, const std::string& location = "")
      : std::runtime_error(location.empty() ? message : message + " [" + location + "]"),
        message_(message) {}
  const std::string& message() const {
    return message_;
  }
  // Process exit status for a `main` that catches this error.
  virtual int exit_code() const {
    return 1;
  }
  // Caused by the user's options or files: reported without the code location.
  virtual bool user_error() const {
    return false;
  }

 private:
  std::string message_;
};

// A bad option, option value or command line: the user fixes the config.
class ConfigError : public Error {
 public:
  using Error::Error;
  int exit_code() const override {
    return 2;
  }
  bool user_error() const override {
    return true;
  }
};

// A missing, truncated or malformed input file: the user fixes the data.
class DataError : public Error {
 public:
  using Error::Error;
  int exit_code() const override {
    return 3;
  }
  bool user_error() const override {
    return true;
  }
};

// Failures of the communication layer and the accelerator runtime.
class CommError : public Error {
 public:
  using Error::Error;
  int exit_code() const override {
    return 4;
  }
};

class CudaError : public Error {
 public:
  using Error::Error;
  int exit_code() const override {
    return 5;
  }
};

// Exit status of a run that a signal stopped after it wrote a checkpoint: sysexits.h's
// EX_TEMPFAIL ("try again"), distinct from the error statuses 1-5. slurm/train.sbatch requeues
// the job on it.
constexpr int kExitStopped = 75;

namespace detail {

// "src/x.cpp:12: check 'cond' failed", the path from src/, include/ or tests/ on.
std::string check_location(const char* file, int line, const char* expression);

template <class E, class... Args>
[[noreturn]] void throw_check_failure(
    const char* file,
    int line,
    const char* expression,
    fmt::format_string<Args...> hint,
    Args&&... args) {
  throw E(fmt::format(hint, std::forward<Args>(args)...), check_location(file, line, expression));
}

}  // namespace detail
}  // namespace uel

#define UEL_CHECK_TYPED(ErrorType, cond, ...)                                                \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      ::uel::detail::throw_check_failure<ErrorType>(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    }                                                                                        \
  } while (0)

// Internal invariants and API misuse.
#define UEL_CHECK(cond, ...) UEL_CHECK_TYPED(::uel::Error, cond, __VA_ARGS__)
// User-supplied options.
#define UEL_CHECK_CONFIG(cond, ...) UEL_CHECK_TYPED(::uel::ConfigError, cond, __VA_ARGS__)
// User-supplied files.
#define UEL_CHECK_DATA(cond, ...) UEL_CHECK_TYPED(::uel::DataError, cond, __VA_ARGS__)

// Library return codes. These expand only where used, so a translation unit includes the
// library header (mpi.h, cuda_runtime.h, nccl.h) itself.
#define UEL_MPI_CHECK(call, ...)                                  \
  do {                                                            \
    const int uel_mpi_rc_ = (call);                               \
    if (uel_mpi_rc_ != MPI_SUCCESS) {                             \
      char uel_mpi_msg_[MPI_MAX_ERROR_STRING];                    \
      int uel_mpi_len_ = 0;                                       \
      MPI_Error_string(uel_mpi_rc_, uel_mpi_msg_, &uel_mpi_len_); \
      ::uel::detail::throw_check_failure<::uel::CommError>(       \
          __FILE__,                                               \
          __LINE__,                                               \
          #call,                                                  \
          "{} ({})",                                              \
          std::string(uel_mpi_msg_, uel_mpi_len_),                \
          fmt::format(__VA_ARGS__));                              \
    }                                                             \
  } while (0)

#define UEL_CUDA_CHECK(call, ...)                           \
  do {                                                      \
    const cudaError_t uel_cuda_rc_ = (call);                \
    if (uel_cuda_rc_ != cudaSuccess) {                      \
      ::uel::detail::throw_check_failure<::uel::CudaError>( \
          __FILE__,                                         \
          __LINE__,                                         \
          #call,                                            \
          "{} ({})",                                        \
          cudaGetErrorString(uel_cuda_rc_),                 \
          fmt::format(__VA_ARGS__));                        \
    }                                                       \
  } while (0)

// NCCL's result names the kind of failure; ncclGetLastError (any communicator) says what
// happened, e.g. which peer or transport.
#define UEL_NCCL_CHECK(call, ...)                           \
  do {                                                      \
    const ncclResult_t uel_nccl_rc_ = (call);               \
    if (uel_nccl_rc_ != ncclSuccess) {                      \
      ::uel::detail::throw_check_failure<::uel::CommError>( \
          __FILE__,                                         \
          __LINE__,                                         \
          #call,                                            \
          "{} ({}); NCCL: {}",                              \
          ncclGetErrorString(uel_nccl_rc_),                 \
          fmt::format(__VA_ARGS__),                         \
          ncclGetLastError(nullptr));                       \
    }                                                       \
  } while (0)
