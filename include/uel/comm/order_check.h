#pragma once

// comm.check_order (DESIGN.md §3; PyTorch's TORCH_DISTRIBUTED_DEBUG=DETAIL does the same):
// before each collective, the ranks all-gather its fingerprint (sequence number, communicator,
// op, dtype, element count, root or reduce op) over a private MPI communicator and compare them,
// so the first collective that differs between ranks ends the job with every rank's entry
// instead of a hang or mixed data. Communicators whose collectives share one order on the device
// (NCCL's) share one OrderCheck: an order across communicators that differs between ranks is
// caught too. MPI communicators each have their own (each may serve its own thread).

#include <cstdint>
#include <mutex>
#include <string>

#include <ATen/core/Tensor.h>
#include <mpi.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

class OrderCheck {
 public:
  // Collective over `comm` (duplicated here): every rank constructs it.
  explicit OrderCheck(MPI_Comm comm);
  ~OrderCheck();
  OrderCheck(const OrderCheck&) = delete;
  OrderCheck& operator=(const OrderCheck&) = delete;

  // A number for the next communicator that reports here (0, 1, ... in creation order, which
  // is the same on every rank because creating a communicator is collective).
  int add_communicator();

  // Compares this collective with every rank's; throws CommError naming each rank's collective
  // when they differ. `tensor` may be null (barrier).
  void verify(int communicator, Op op, const at::Tensor* tensor, int64_t arg);

  int64_t verified() const;

 private:
  mutable std::mutex mutex_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int communicators_ = 0;
  int64_t sequence_ = 0;
};

}  // namespace uel::comm
