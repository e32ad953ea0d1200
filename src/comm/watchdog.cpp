#include "uel/comm/watchdog.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "uel/comm/world.h"
#include "uel/core/clock.h"
#include "uel/core/error.h"
#include "uel/core/logging.h"

namespace uel::comm {

namespace {

using core::Clock;

struct InFlight {
  std::string what;
  std::function<bool()> probe;
  Clock::time_point start;
};

// The watchdog's state lives for the whole process; its thread is detached so that a job
// aborting from it never waits on a join.
struct State {
  std::mutex mutex;
  // Held while health checks run: remove_health_check waits on it, so a check never runs on a
  // communicator its owner has destroyed.
  std::mutex checks_mutex;
  std::condition_variable retired;
  std::map<uint64_t, InFlight> in_flight;
  std::map<uint64_t, std::function<std::string()>> checks;
  uint64_t next_id = 1;
  double timeout_s = 300;
  double stop_timeout_s = 0;
  std::function<bool()> stopping;
  std::optional<Clock::time_point> stopped_at;  // first tick that saw stopping()
  bool started = false;
};

State& state() {
  static State* s = new State();  // never destroyed: the detached thread may outlive main
  return *s;
}

[[noreturn]] void fatal(const std::string& message) {
  log_error("{}", message);
  // With peers, MPI_Abort ends them too. Alone, no MPI call: the main thread may be inside
  // one, and MPI_Finalize from this thread could wait for it forever.
  if (world().size > 1)
    fail_world(4);
  std::_Exit(4);
}

void tick() {
  State& s = state();
  std::string failure;
  std::unique_lock<std::mutex> checks_lock(s.checks_mutex);
  std::vector<std::function<std::string()>> checks;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    const auto now = Clock::now();
    if (!s.stopped_at && s.stopping && s.stopping())
      s.stopped_at = now;
    for (auto it = s.in_flight.begin(); it != s.in_flight.end();) {
      bool done = false;
      try {
        done = it->second.probe && it->second.probe();
      } catch (const std::exception& e) {
        // The device reports the operation failed: it will never finish.
        if (failure.empty())
          failure = fmt::format("{} failed: {}", it->second.what, e.what());
      }
      if (done) {
        it = s.in_flight.erase(it);
        s.retired.notify_all();
        continue;
      }
      const double age = std::chrono::duration<double>(now - it->second.start).count();
      if (s.timeout_s > 0 && age > s.timeout_s && failure.empty()) {
        failure = fmt::format(
            "{} has not finished after {:.0f} s (--comm.timeout_s={}); a peer rank is stuck or "
            "dead, aborting the job",
            it->second.what,
            age,
            s.timeout_s);
      }
      if (s.stopped_at && s.stop_timeout_s > 0 && failure.empty()) {
        const double waited =
            std::chrono::duration<double>(now - std::max(it->second.start, *s.stopped_at)).count();
        if (waited > s.stop_timeout_s) {
          failure = fmt::format(
              "{} has not finished {:.0f} s after the stop signal (--comm.stop_timeout_s={}); a "
              "peer rank is stuck or dead, aborting the job before the scheduler kills it",
              it->second.what,
              waited,
              s.stop_timeout_s);
        }
      }
      ++it;
    }
    for (auto& [id, check] : s.checks) {
      checks.push_back(check);
    }
  }
  for (auto& check : checks) {
    if (failure.empty()) {
      failure = check();
    }
  }
  checks_lock.unlock();
  if (!failure.empty()) {
    fatal(failure);
  }
}

void ensure_thread() {
  State& s = state();
  if (s.started) {
    return;
  }
  s.started = true;
  std::thread([] {
    while (true) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      tick();
    }
  }).detach();
}

}  // namespace

Watchdog& Watchdog::instance() {
  static Watchdog w;
  return w;
}

void Watchdog::set_timeout(double seconds) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().timeout_s = seconds;
}

double Watchdog::timeout() const {
  std::lock_guard<std::mutex> lock(state().mutex);
  return state().timeout_s;
}

void Watchdog::bound_stop(double seconds, std::function<bool()> stopping) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.stop_timeout_s = seconds;
  s.stopping = std::move(stopping);
}

uint64_t Watchdog::begin(std::string what, std::function<bool()> probe) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  ensure_thread();
  const uint64_t id = s.next_id++;
  s.in_flight.emplace(id, InFlight{std::move(what), std::move(probe), Clock::now()});
  return id;
}

void Watchdog::end(uint64_t token) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.in_flight.erase(token);
  s.retired.notify_all();
}

uint64_t Watchdog::add_health_check(std::function<std::string()> check) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  ensure_thread();
  const uint64_t id = s.next_id++;
  s.checks.emplace(id, std::move(check));
  return id;
}

void Watchdog::remove_health_check(uint64_t id) {
  std::lock_guard<std::mutex> running(state().checks_mutex);
  std::lock_guard<std::mutex> lock(state().mutex);
  state().checks.erase(id);
}

void Watchdog::wait_all() {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  s.retired.wait(lock, [&s] {
    for (const auto& [id, op] : s.in_flight) {
      if (op.probe)
        return false;
    }
    return true;
  });
}

}  // namespace uel::comm
