#pragma once

// Collectives on CUDA tensors through NCCL (built when the CUDA toolkit and nccl.h are found).
//
// Ordering: LibTorch's work runs on the legacy default stream (uel never switches streams).
// Each op makes its own stream wait for an event recorded there, enqueues the NCCL call, and
// makes the default stream wait for the op's completion event, so kernels before and after see
// consistent data and freed inputs are not reused early. Completion and ncclCommGetAsyncError
// are polled by the Watchdog, which aborts the communicator and the job after the timeout.

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

class NcclCommunicator : public Communicator {
 public:
  // Collective over `bootstrap` (MPI carries the NCCL unique id); device: this rank's GPU.
  NcclCommunicator(MPI_Comm bootstrap, int device);
  ~NcclCommunicator() override;

  int rank() const override {
    return rank_;
  }
  int size() const override {
    return size_;
  }
  std::string backend() const override {
    return "nccl";
  }
  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  at::Tensor all_gather_v(const at::Tensor& tensor) override;
  void broadcast(at::Tensor& tensor, int root) override;
  at::Tensor reduce_scatter(const at::Tensor& tensor, ReduceOp op) override;
  at::Tensor all_to_all_v(
      const at::Tensor& tensor, const std::vector<int64_t>& send_counts) override;
  void barrier() override;
  std::unique_ptr<Communicator> split() override;

 private:
  // Orders `enqueue` (NCCL calls on stream_) between the default stream's past and future work.
  template <class F>
  void run(Op op, F&& enqueue);
  void check_device(const at::Tensor& tensor, Op op) const;
  // Row counts of every rank, exchanged over MPI.
  std::vector<int64_t> exchange(int64_t value);

  MPI_Comm bootstrap_ = MPI_COMM_NULL;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  int device_ = 0;
  int rank_ = 0;
  int size_ = 1;
  uint64_t health_check_ = 0;
};

}  // namespace uel::comm
