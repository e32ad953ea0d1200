#include "uel/core/logging.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace uel {
namespace {

std::atomic<int> g_rank{0};
std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::mutex g_write_mutex;

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
  std::FILE* out = level >= LogLevel::kWarn ? stderr : stdout;
  std::fputs(line.c_str(), out);
  std::fflush(out);
}

}  // namespace detail
}  // namespace uel
