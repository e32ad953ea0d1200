// A job in which rank 1 fails while the others wait in a collective; test_failures.sh checks
// that mpirun ends with a non-zero status quickly. device_error: an asynchronous operation of
// the last rank reports an error to the watchdog (as a failed CUDA event does); unfinished: it
// never finishes (also alone, where the watchdog must end the process without MPI).
//   failure_probe throw|kill|stuck|device_error|unfinished [watchdog timeout seconds]

#include <signal.h>
#include <unistd.h>

#include <string>

#include <ATen/ATen.h>

#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"
#include "uel/core/error.h"

int main(int argc, char** argv) {
  return uel::comm::run_guarded([&] {
    uel::comm::init_world(&argc, &argv);
    const std::string mode = argc > 1 ? argv[1] : "";
    if (argc > 2) {
      uel::comm::Watchdog::instance().set_timeout(std::stod(argv[2]));
    }
    auto comm = uel::comm::make_communicator("mpi", c10::Device(c10::kCPU));
    comm->barrier();
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
      }
    }
    at::Tensor t = at::ones({1024});
    comm->all_reduce(t, uel::comm::ReduceOp::kSum);
    return 0;
  });
}
