#pragma once

// No rank waits forever: every collective is registered here while in flight, and a background
// thread ends the job (log with host:pid:rank, then fail_world) when one exceeds the timeout or
// a backend reports an asynchronous error (NCCL).

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace uel::comm {

class Watchdog {
 public:
  static Watchdog& instance();

  // Seconds a collective may take before the job is aborted (default 300; <= 0 disables).
  void set_timeout(double seconds);
  double timeout() const;

  // Once stopping() turns true (a stop signal: SIGTERM, then SIGKILL at the scheduler's
  // KillWait), an operation may take at most `seconds` more (<= 0: only the timeout above), so
  // that a rank stuck in a collective ends with its own message instead of the scheduler's kill.
  void bound_stop(double seconds, std::function<bool()> stopping);

  // Registers an in-flight operation. With a probe, the watchdog itself retires the operation
  // once probe() returns true (asynchronous GPU work); a probe that throws (the device reports
  // an error) ends the job with the exception's message. Without a probe the caller calls end().
  uint64_t begin(std::string what, std::function<bool()> probe = {});
  void end(uint64_t token);

  // A check run on every tick; a non-empty result is a fatal error message.
  uint64_t add_health_check(std::function<std::string()> check);
  void remove_health_check(uint64_t id);

  // Blocks until every probed operation has retired (or the watchdog aborts the job).
  void wait_all();

 private:
  Watchdog() = default;
};

}  // namespace uel::comm
