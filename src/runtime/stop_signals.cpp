#include "uel/runtime/stop_signals.h"

#include <atomic>
#include <csignal>

#include "uel/core/error.h"

namespace uel::runtime {
namespace {

// Lock-free, so the handler may store it and any thread may read it.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

void record_signal(int signal) {
  int none = 0;
  g_stop_signal.compare_exchange_strong(none, signal);
}

}  // namespace

void install_stop_signals() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  // Blocking calls (file reads, MPI progress) resume instead of failing with EINTR.
  action.sa_flags = SA_RESTART;
  for (const int signal : {SIGUSR1, SIGTERM}) {
    UEL_CHECK(
        sigaction(signal, &action, nullptr) == 0, "installing the handler of signal {}", signal);
  }
}

int stop_signal() {
  return g_stop_signal.load();
}

}  // namespace uel::runtime
