#pragma once

// Data-parallel gradient synchronisation, as PyTorch's DDP does it: parameters and buffers are
// broadcast from rank 0 at construction; gradients are packed into buckets (reverse
// registration order, a small first bucket so communication starts early), and each bucket is
// all-reduced (average) as soon as its last gradient is produced during backward, overlapping
// the rest of backward. Buckets launch in index order on every rank.
//
// Where they launch from (DESIGN.md §3, one order of collectives):
// - kInline (the default on asynchronous backends, NCCL): from the backward pass itself, on the
//   model's communicator, so bucket all-reduces and SyncBatchNorm's collectives are issued by
//   one thread in one order, the same on every rank. The op only enqueues; finish() makes the
//   compute stream wait for the buckets.
// - kThread (the default on blocking backends, MPI): on a worker thread with its own
//   communicator, so a blocking all-reduce overlaps backward; MPI orders each communicator's
//   collectives independently, so the two threads cannot deadlock each other.

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"
#include "uel/core/trace.h"

namespace uel::comm {

enum class BucketLaunch { kAuto, kInline, kThread };

struct GradSyncOptions {
  BucketLaunch launch = BucketLaunch::kAuto;
  // Buffers (BatchNorm running statistics) are broadcast from rank 0 at every finish(), as DDP
  // does, so they cannot drift apart where each rank normalises with its own batch.
  bool broadcast_buffers = false;
  double bucket_mb = 25;
  double first_bucket_mb = 1;
  // Parameters without a gradient on a rank contribute zero instead of being an error; those no
  // rank used keep no gradient (DDP's find_unused_parameters). Costs one small all-reduce a step.
  bool allow_unused = false;
  // Each bucket's all-reduce (enqueue, where the backend is asynchronous) and finish()'s wait
  // become trace events when set (train.trace).
  Tracer* tracer = nullptr;
  // Squared norms of this rank's gradient (before the average) and of the averaged one, for
  // the gradient noise scale (train.noise_scale): one reduction per bucket, no collective.
  bool measure_norms = false;
};

class GradSync {
 public:
  GradSync(
      std::vector<std::pair<std::string, at::Tensor>> named_parameters,
      std::vector<at::Tensor> buffers,
      Communicator& comm,
      GradSyncOptions options = {});
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // After backward(): waits for every bucket and leaves the rank-averaged gradient in .grad
  // (and, with broadcast_buffers, rank 0's buffers on every rank).
  void finish();

  bool launches_inline() const {
    return comm_ == nullptr;
  }

  // While alive, backward passes only accumulate locally (gradient accumulation); the next
  // synchronised backward + finish() averages the accumulated sum.
  class NoSync {
   public:
    explicit NoSync(GradSync* sync) : sync_(sync) {
      sync_->no_sync_ = true;
    }
    ~NoSync() {
      sync_->no_sync_ = false;
    }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    GradSync* sync_;
  };
  NoSync no_sync() {
    return NoSync(this);
  }

  // Traffic of the bucket all-reduces on the worker thread's own communicator (empty when
  // they launch inline: they are then counted by the model's communicator).
  CommStats comm_stats() const {
    return comm_ ? comm_->stats() : CommStats{};
  }

  // Where the bucket all-reduces' time went, summed over finish() calls (callers take
  // differences, as with comm_stats()). Host clocks see it where the all-reduce blocks a host
  // thread: on the worker (kThread), and inline on a blocking backend, where backward stalls
  // for every bucket so all of it is exposed. NCCL runs them on the device: not measured.
  struct Timing {
    int64_t steps = 0;
    double all_reduce_seconds = 0;
    // The part backward did not hide: finish() waiting for the buckets (a slower peer's
    // backward shows up here too, as it does in any step).
    double exposed_seconds = 0;
  };
  Timing timing() const;

  // With measure_norms, after finish(): ||g_rank||^2 of this rank's gradient as it entered the
  // all-reduce and ||mean_r g_r||^2 of the average, float64 scalars on the gradients' device.
  struct SquaredNorms {
    at::Tensor local;
    at::Tensor averaged;
  };
  const SquaredNorms& squared_norms() const;
  bool measures_timing() const {
    return !launches_inline() || !model_comm_.asynchronous();
  }

  // Parameter indices of each bucket, in launch order (for tests and logs).
  std::vector<std::vector<size_t>> bucket_layout() const;
  int64_t gradient_bytes() const;  // of all buckets: what one step all-reduces

 private:
  struct Bucket {
    at::Tensor flat;
    std::vector<size_t> params;
    int64_t pending = 0;            // gradients still to arrive this step
    bool ready = false;             // all gradients in, may launch
    at::Tensor local_squared_norm;  // measure_norms: of `flat` before its all-reduce
  };
  struct Slot {
    std::string name;
    at::Tensor param;
    size_t bucket = 0;
    at::Tensor view;  // the parameter's gradient inside its bucket
    bool arrived = false;
    unsigned hook = 0;
  };

  void on_gradient(size_t index, const at::Tensor& grad);
  void mark_arrived(size_t index);
  // kInline: launches the ready buckets that are next in order (mutex_ held).
  void launch_ready();
  void worker_loop();
  void trace_all_reduce(size_t bucket, Tracer::Clock::time_point start) const;
  void measure_local_norm(Bucket& bucket) const;
  void reset_step();
  void broadcast_buffers();

  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::vector<at::Tensor> buffers_;
  Communicator& model_comm_;                     // the model's (SyncBatchNorm's) communicator
  std::unique_ptr<Communicator> comm_;           // kThread: the worker's own; null when inline
  std::vector<std::unique_ptr<Work>> launched_;  // kInline: this step's bucket all-reduces
  GradSyncOptions options_;
  bool no_sync_ = false;
  SquaredNorms squared_norms_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  Timing timing_;
  size_t next_launch_ = 0;
  bool stopping_ = false;
  std::exception_ptr failure_;
  std::thread worker_;
};

}  // namespace uel::comm
