#pragma once

#include <mpi.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

// Collectives over MPI on host memory. CUDA tensors are staged through pinned host buffers
// (uel does not assume a CUDA-aware MPI). float16/bfloat16 reductions run in float32.
class MpiCommunicator : public Communicator {
 public:
  // Duplicates `comm`, so this communicator's traffic never mixes with anyone else's.
  explicit MpiCommunicator(MPI_Comm comm);
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
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace uel::comm
