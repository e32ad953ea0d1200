// main() of the multi-rank test binaries: the same binary runs under mpirun with 1, 2 and 4
// ranks. Only rank 0 prints gtest's report; every rank's failures still fail the job.

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "uel/comm/watchdog.h"
#include "uel/comm/world.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const auto& world = uel::comm::init_world(&argc, &argv);
  at::set_num_threads(1);  // up to 4 ranks share 2 cores
  // A rank that fails alone would leave its peers in a collective: end the job instead.
  uel::comm::Watchdog::instance().set_timeout(120);
  if (world.rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int result = RUN_ALL_TESTS();
  // Exit codes are combined so every rank agrees on the outcome.
  int worst = result;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  // Nothing ran (every selected case skipped, e.g. CUDA cases without a GPU): exit 77, which
  // ctest's SKIP_RETURN_CODE reports as skipped rather than passed.
  const auto& unit = *::testing::UnitTest::GetInstance();
  int all_skipped =
      unit.test_to_run_count() > 0 && unit.skipped_test_count() == unit.test_to_run_count();
  int everywhere = all_skipped;
  MPI_Allreduce(&all_skipped, &everywhere, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  uel::comm::finalize_world();
  return worst == 0 && everywhere ? 77 : worst;
}
