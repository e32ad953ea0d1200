#pragma once

// Collectives on CUDA tensors through NCCL (built when the CUDA toolkit and nccl.h are found).
//
// Ordering: each op makes the communicator's own stream wait for the caller's *current* CUDA
// stream (LibTorch's, so a side stream set by the caller is respected), enqueues the NCCL call
// there, and records a completion event. Synchronous ops make the current stream wait for that
// event at once; all_reduce_async hands it back as a Work, so the compute stream waits only
// where the result is needed (GradSync::finish). Tensors NCCL touches are recorded with the
// caching allocator for the NCCL stream, so memory freed early is not reused before NCCL is done.
// The host never blocks. Completion and ncclCommGetAsyncError are polled by the Watchdog, which
// aborts the communicator and the job after the timeout.
//
// All NCCL communicators of a rank run on one GPU, so their collectives must be issued in one
// order on every rank (DESIGN.md §3); with comm.check_order they share one OrderCheck.

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

class OrderCheck;

class NcclCommunicator : public Communicator {
 public:
  // Collective over `bootstrap` (MPI carries the NCCL unique id); device: this rank's GPU.
  // `order_check`: the one to share (split()); by default a new one when check_order is on.
  NcclCommunicator(
      MPI_Comm bootstrap, int device, std::shared_ptr<OrderCheck> order_check = nullptr);
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
  bool asynchronous() const override {
    return true;
  }
  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  std::unique_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  at::Tensor all_gather_v(const at::Tensor& tensor) override;
  void broadcast(at::Tensor& tensor, int root) override;
  at::Tensor reduce_scatter(const at::Tensor& tensor, ReduceOp op) override;
  at::Tensor all_to_all_v(
      const at::Tensor& tensor, const std::vector<int64_t>& send_counts) override;
  void barrier() override;
  std::unique_ptr<Communicator> split() override;

 private:
  // Enqueues `enqueue` (NCCL calls on stream_) after the current stream's past work; returns
  // the op's completion, which the caller waits for (Work::wait) before using the results.
  // `tensors`: every tensor the NCCL calls read or write.
  template <class F>
  std::unique_ptr<Work> run(Op op, std::initializer_list<at::Tensor> tensors, F&& enqueue);
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
