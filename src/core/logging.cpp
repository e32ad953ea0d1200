#include "uel/core/logging.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

namespace uel {
namespace {

std::atomic<int> g_rank{0};
std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::mutex g_write_mutex;
bool g_progress_shown = false;  // a status line is on the terminal (g_write_mutex)

// Erases the status line, if any, so the next output starts on a clean line.
void clear_progress() {
  if (g_progress_shown) {
    std::fputs("\r\033[K", stdout);
    std::fflush(stdout);
    g_progress_shown = false;
  }
}

const char* level_tag(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void set_log_rank(int rank) {
  g_rank = rank;
}

int log_rank() {
  return g_rank;
}

void set_log_level(LogLevel level) {
  g_level = level;
}

LogLevel log_level() {
  return g_level;
}

std::string process_identity() {
  char host[256] = "unknown-host";
  gethostname(host, sizeof(host) - 1);
  host[sizeof(host) - 1] = '\0';
  return fmt::format("{}:{}:{}", host, static_cast<long>(getpid()), g_rank.load());
}

bool progress_line_enabled() {
  static const bool enabled = [] {
    const char* mode = std::getenv("UEL_PROGRESS");
    if (mode != nullptr && *mode != '\0')
      return std::strcmp(mode, "line") == 0;
    const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr ||
                          std::getenv("PMI_SIZE") != nullptr ||
                          std::getenv("SLURM_PROCID") != nullptr;
    return !launched && isatty(STDOUT_FILENO) != 0;
  }();
  return enabled && g_rank == 0;
}

void show_progress(const std::string& text) {
  if (!progress_line_enabled())
    return;
  std::lock_guard<std::mutex> lock(g_write_mutex);
  std::fputs(("\r" + text + "\033[K").c_str(), stdout);
  std::fflush(stdout);
  g_progress_shown = true;
}

namespace detail {

void log_line(LogLevel level, const std::string& message) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
  std::string line;
  if (level >= LogLevel::kWarn) {
    line =
        fmt::format("[uel {} {}] {}: {}\n", stamp, process_identity(), level_tag(level), message);
  } else {
    line = fmt::format("[uel {}] {}\n", stamp, message);
  }
  // Info goes to stdout with the program's results; warnings and errors to stderr.
  std::lock_guard<std::mutex> lock(g_write_mutex);
  clear_progress();
  std::FILE* out = level >= LogLevel::kWarn ? stderr : stdout;
  std::fputs(line.c_str(), out);
  std::fflush(out);
}

}  // namespace detail
}  // namespace uel
