// A job in which rank 1 fails while the others wait in a collective; test_failures.sh checks
// that mpirun ends with a non-zero status quickly. device_error: an asynchronous operation of
// the last rank reports an error to the watchdog (as a failed CUDA event does); unfinished: it
// never finishes (also alone, where the watchdog must end the process without MPI). stop: rank 1
// never returns, the others print "waiting" and wait in the all-reduce until a stop signal
// (SIGUSR1 through mpirun) bounds the wait to 1 s (comm.stop_timeout_s).
//   failure_probe throw|kill|stuck|device_error|unfinished|stop [watchdog timeout seconds]

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include <ATen/ATen.h>

#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"
#include "uel/runtime/stop_signals.h"

int main(int argc, char** argv) {
  return uel::comm::run_guarded([&] {
    uel::comm::init_world(&argc, &argv);
    const std::string mode = argc > 1 ? argv[1] : "";
    if (argc > 2) {
      uel::comm::Watchdog::instance().set_timeout(std::stod(argv[2]));
    }
    if (mode == "stop") {
      uel::runtime::install_stop_signals();
      uel::comm::Watchdog::instance().bound_stop(
          1, [] { return uel::runtime::stop_signal() != 0; });
    }
    auto comm = uel::comm::make_communicator("mpi", c10::Device(c10::kCPU));
    comm->barrier();
    if (mode == "stop" && comm->rank() == 0) {
      std::printf("waiting\n");
      std::fflush(stdout);
    }
    if (comm->rank() == comm->size() - 1 && (mode == "device_error" || mode == "unfinished")) {
      uel::comm::Watchdog::instance().begin("injected device op", [mode]() -> bool {
        UEL_CHECK(mode != "device_error", "injected device failure");
        return false;
      });
      uel::comm::Watchdog::instance().wait_all();
    }
    if (comm->rank() == 1) {
      if (mode == "throw") {
        UEL_CHECK_DATA(false, "injected failure on rank {}", comm->rank());
      } else if (mode == "kill") {
        raise(SIGKILL);
      } else if (mode == "stuck") {
        sleep(600);
      } else if (mode == "stop") {
        while (true)
          pause();  // the stop signal interrupts pause(): stay stuck
      }
    }
    at::Tensor t = at::ones({1024});
    comm->all_reduce(t, uel::comm::ReduceOp::kSum);
    return 0;
  });
}
