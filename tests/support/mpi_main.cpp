// main() for test binaries that need MPI: initialises it (a singleton when started without
// mpirun), runs the tests, finalises.

#include <mpi.h>

#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  const int result = RUN_ALL_TESTS();
  MPI_Finalize();
  return result;
}
