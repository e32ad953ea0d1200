#pragma once

#include <mpi.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

// Collectives over MPI on host memory. CUDA tensors are staged through pinned host buffers
// (uel does not assume a CUDA-aware MPI). float16/bfloat16 reductions run in float32.
// reduce_scatter is a ring of MPI_Sendrecv steps (one all-reduce for small buffers): OpenMPI's
// MPI_Reduce_scatter_block ran 25-32x slower than an MPI_Allreduce of the same buffer here.
class MpiCommunicator : public Communicator {
 public:
  // Duplicates `comm`, so this communicator's traffic never mixes with anyone else's. `device`:
  // where callers' tensors live (CUDA ones are staged).
  explicit MpiCommunicator(MPI_Comm comm, c10::Device device = c10::Device(c10::kCPU));
  ~MpiCommunicator() override;

  int rank() const override {
    return rank_;
  }
  int size() const override {
    return size_;
  }
  std::string backend() const override {
    return "mpi";
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

  MPI_Comm mpi_comm() const {
    return comm_;
  }

 private:
  // Block rank() of the reduction of `in` (contiguous host memory, [size() * n, ...]).
  at::Tensor ring_reduce_scatter(const at::Tensor& in, ReduceOp op);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace uel::comm
