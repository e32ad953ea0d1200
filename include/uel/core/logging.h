#pragma once

// Rank-aware logging. Rank 0 talks (info, warnings); every rank reports errors, prefixed with
// host:pid:rank so a failure in a 64-rank job can be traced to its process.

#include <string>

#include <fmt/format.h>

namespace uel {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Set once by the communication layer after bootstrap; defaults to rank 0 of 1.
void set_log_rank(int rank);
int log_rank();
void set_log_level(LogLevel level);
LogLevel log_level();

// "host:pid:rank", the identity every error line carries.
std::string process_identity();

// The terminal's single updating status line (training progress), on rank 0 only. It shows when
// UEL_PROGRESS=line, or when UEL_PROGRESS is unset and stdout is a terminal outside a launcher
// (mpirun gives ranks a pseudo-terminal even when its own output is a file, so launch/uel-run
// and tools/demo.sh set UEL_PROGRESS=line when theirs is a terminal); UEL_PROGRESS=plain or a
// log file gets none, the periodic log lines are the record there. Any log line clears it first.
bool progress_line_enabled();
void show_progress(const std::string& text);

namespace detail {
void log_line(LogLevel level, const std::string& message);
}  // namespace detail

template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kDebug && log_rank() == 0) {
    detail::log_line(LogLevel::kDebug, fmt::format(f, std::forward<Args>(args)...));
  }
}

template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kInfo && log_rank() == 0) {
    detail::log_line(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
  }
}

template <class... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kWarn && log_rank() == 0) {
    detail::log_line(LogLevel::kWarn, fmt::format(f, std::forward<Args>(args)...));
  }
}

// Errors are printed by every rank: the failing one may not be rank 0.
template <class... Args>
void log_error(fmt::format_string<Args...> f, Args&&... args) {
  detail::log_line(LogLevel::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace uel
