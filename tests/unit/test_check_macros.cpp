// The library-return-code checks: each turns a failure code into a typed uel error carrying the
// library's own message. The CUDA and NCCL cases are compiled wherever the toolkit is found and
// need no GPU (the error-string lookups do not touch a device).

#include <mpi.h>

#include <gtest/gtest.h>

#include "test_util.h"
#include "uel/core/error.h"

#ifdef UEL_HAVE_CUDA
#include <cuda_runtime.h>
#endif
#ifdef UEL_HAVE_NCCL
#include <nccl.h>
#endif

namespace uel {
namespace {

TEST(CheckMacros, MpiFailureBecomesCommError) {
  EXPECT_NO_THROW(UEL_MPI_CHECK(MPI_SUCCESS, "fine"));
  EXPECT_THROW_WITH(
      UEL_MPI_CHECK(MPI_ERR_COUNT, "sending {} floats", 3), CommError, "(sending 3 floats)");
  try {
    UEL_MPI_CHECK(MPI_ERR_COUNT, "x");
  } catch (const CommError& e) {
    char expected[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(MPI_ERR_COUNT, expected, &len);
    EXPECT_NE(std::string(e.what()).find(std::string(expected, len)), std::string::npos)
        << e.what();
    EXPECT_EQ(e.exit_code(), 4);
  }
}

#ifdef UEL_HAVE_CUDA
TEST(CheckMacros, CudaFailureBecomesCudaError) {
  EXPECT_THROW_WITH(
      UEL_CUDA_CHECK(cudaErrorInvalidValue, "copying"),
      CudaError,
      cudaGetErrorString(cudaErrorInvalidValue));
}
#else
TEST(CheckMacros, CudaFailureBecomesCudaError) {
  GTEST_SKIP() << "built without the CUDA toolkit";
}
#endif

#ifdef UEL_HAVE_NCCL
TEST(CheckMacros, NcclFailureBecomesCommError) {
  EXPECT_THROW_WITH(
      UEL_NCCL_CHECK(ncclInvalidArgument, "all_reduce"),
      CommError,
      ncclGetErrorString(ncclInvalidArgument));
}
#else
TEST(CheckMacros, NcclFailureBecomesCommError) {
  GTEST_SKIP() << "built without NCCL";
}
#endif

}  // namespace
}  // namespace uel
