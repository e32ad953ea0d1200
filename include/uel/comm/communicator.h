#pragma once

// Collectives over the ranks of a job (DESIGN.md §3). Backends: MpiCommunicator (CPU tensors;
// CUDA tensors are staged through host memory), NcclCommunicator (CUDA tensors) and
// LocalCommunicator (world size 1). Losses, samplers and trainers talk only to this interface.
//
// Every rank must call the same collectives in the same order with matching shapes; a
// communicator serves one thread at a time (use split() to get an independent one for another
// thread, as GradSync does on CPU). A communicator has a device: callers hand it tensors there
// (the NCCL backend refuses others; MPI stages CUDA tensors through pinned host memory).
// comm.check_order (set_check_order) fingerprints every collective and compares it across ranks
// before it runs, so a rank that issues another collective is named instead of hanging.

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace uel::comm {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

enum class Op {
  kAllReduce,
  kAllGather,
  kAllGatherV,
  kBroadcast,
  kReduceScatter,
  kAllToAllV,
  kBarrier
};
constexpr int kNumOps = 7;
const char* op_name(Op op);

struct OpStats {
  int64_t calls = 0;
  int64_t bytes = 0;   // bytes of the tensors handed to the op by this rank
  double seconds = 0;  // host time inside the op (for NCCL: to enqueue and, if waited, finish)
};

struct CommStats {
  std::array<OpStats, kNumOps> ops{};
  int64_t total_bytes() const;
  double total_seconds() const;
};

// A started collective. wait() orders the caller's later work after it: on the CPU backends
// the op has completed when it is returned; on NCCL, wait() makes the current CUDA stream wait
// for it without blocking the host.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() {}
};

class OrderCheck;

// comm.check_order: communicators created after set_check_order(true) verify every collective.
void set_check_order(bool enabled);
bool check_order_enabled();

class Communicator {
 public:
  explicit Communicator(c10::Device device) : device_(device) {}
  virtual ~Communicator();

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  // Where the tensors handed to this communicator live.
  c10::Device device() const {
    return device_;
  }
  // True where collectives return before completing (NCCL): their issue order on a rank is the
  // order the device runs them in, across every communicator of the rank.
  virtual bool asynchronous() const {
    return false;
  }

  // In place. kAvg divides the sum by size(); integer tensors support sum, max and min.
  virtual void all_reduce(at::Tensor& tensor, ReduceOp op) = 0;
  // all_reduce that the caller waits for later (GradSync's buckets); the tensor must stay
  // untouched until then.
  virtual std::unique_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op);
  // Concatenates every rank's tensor along dim 0; all ranks pass the same shape.
  virtual at::Tensor all_gather(const at::Tensor& tensor) = 0;
  // As all_gather, but the first dimension may differ between ranks (also be 0).
  virtual at::Tensor all_gather_v(const at::Tensor& tensor) = 0;
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // tensor: [size() * n, ...] on every rank; returns block rank() ([n, ...]) of the reduction.
  virtual at::Tensor reduce_scatter(const at::Tensor& tensor, ReduceOp op) = 0;
  // Sends rows [offset_s, offset_s + send_counts[s]) of tensor to rank s (offsets are running
  // sums); returns the rows received, ordered by source rank.
  virtual at::Tensor all_to_all_v(
      const at::Tensor& tensor, const std::vector<int64_t>& send_counts) = 0;
  virtual void barrier() = 0;

  // An independent communicator over the same ranks (collective: every rank calls it).
  virtual std::unique_ptr<Communicator> split() = 0;

  // One number through a float64 tensor on device(); returns the reduced value on every rank.
  double all_reduce_scalar(double value, ReduceOp op);
  // Rank `root`'s string on every rank (decisions one rank takes for all, e.g. which checkpoint).
  std::string broadcast_string(const std::string& value, int root);

  CommStats stats() const;
  void reset_stats();

  // The comm.check_order verifier of this communicator (null when off or alone).
  const std::shared_ptr<OrderCheck>& order_check() const {
    return order_check_;
  }

 protected:
  // Backends time and count every op through this; with comm.check_order it first verifies
  // that every rank is at the same collective (`tensor` may be null; `arg`: root or reduce op).
  class Timed {
   public:
    Timed(Communicator* comm, Op op, const at::Tensor* tensor, int64_t arg = 0);
    ~Timed();

   private:
    Communicator* comm_;
    Op op_;
    int64_t bytes_;
    double start_;
    uint64_t watchdog_token_;
  };

  // Elements per row (dimension 0), also for a tensor with no rows.
  static int64_t row_numel(const at::Tensor& tensor);
  // The tensor's sizes with the first one replaced.
  static std::vector<int64_t> with_first(const at::Tensor& tensor, int64_t first);

  // Checks shared by every backend; each names the op and the backend.
  void check_tensor(const at::Tensor& tensor, Op op) const;
  void check_reduce(const at::Tensor& tensor, ReduceOp reduce, Op op) const;

  // Backends that talk over MPI call this in their constructor when check_order_enabled().
  void set_order_check(std::shared_ptr<OrderCheck> check, int index);

 private:
  c10::Device device_;
  std::shared_ptr<OrderCheck> order_check_;
  int order_index_ = 0;  // this communicator's number within its OrderCheck
  mutable std::mutex stats_mutex_;
  CommStats stats_;
};

// World size 1: every collective is the identity (on a copy where it returns a new tensor).
class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(c10::Device device = c10::Device(c10::kCPU)) : Communicator(device) {}
  int rank() const override {
    return 0;
  }
  int size() const override {
    return 1;
  }
  std::string backend() const override {
    return "local";
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
};

}  // namespace uel::comm
