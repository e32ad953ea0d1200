#include "uel/comm/mpi_communicator.h"

#include <limits>

#include <ATen/ATen.h>

#include "uel/comm/order_check.h"
#include "uel/core/error.h"

namespace uel::comm {

namespace {

// float16/bfloat16 travel as 16-bit words; MPI cannot reduce them, so reductions widen first.
MPI_Datatype mpi_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kByte:
      return MPI_UINT8_T;
    case at::kHalf:
    case at::kBFloat16:
      return MPI_UINT16_T;
    default:
      UEL_CHECK(false, "mpi: no MPI type for {}", c10::toString(t));
  }
  return MPI_DATATYPE_NULL;
}

bool narrow_float(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

// With more than 2 ranks, reduce_scatter below this many bytes runs as one all-reduce: the
// ring's size - 1 latency-bound steps cost more (measured on 4 ranks here; on 2, one step).
constexpr int64_t kRingMinBytes = 1 << 20;

int as_count(int64_t n, const char* op) {
  UEL_CHECK(
      n <= std::numeric_limits<int>::max(),
      "mpi: {} of {} elements exceeds MPI's int count; split the tensor",
      op,
      n);
  return static_cast<int>(n);
}

// A contiguous host tensor to hand to MPI: the tensor itself when it already is one, else a
// (pinned, for CUDA) staging copy.
at::Tensor host_buffer(const at::Tensor& t) {
  if (t.device().is_cpu()) {
    return t.contiguous();
  }
  at::Tensor host = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  host.copy_(t);
  return host;
}

at::Tensor host_empty(const at::Tensor& like, at::IntArrayRef sizes) {
  return at::empty(sizes, like.options().device(at::kCPU).pinned_memory(like.is_cuda()));
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, c10::Device device) : Communicator(device) {
  UEL_MPI_CHECK(MPI_Comm_dup(comm, &comm_), "duplicating the communicator");
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  if (check_order_enabled() && size_ > 1) {
    set_order_check(std::make_shared<OrderCheck>(comm_), 0);
  }
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) {
    MPI_Comm_free(&comm_);
  }
}

void MpiCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, Op::kAllReduce);
  check_reduce(tensor, op, Op::kAllReduce);
  Timed timed(this, Op::kAllReduce, &tensor, static_cast<int64_t>(op));
  at::Tensor buffer =
      narrow_float(tensor) ? tensor.to(at::kCPU, at::kFloat).contiguous() : host_buffer(tensor);
  UEL_MPI_CHECK(
      MPI_Allreduce(
          MPI_IN_PLACE,
          buffer.data_ptr(),
          as_count(buffer.numel(), "all_reduce"),
          mpi_type(buffer.scalar_type()),
          mpi_op(op),
          comm_),
      "all_reduce of {} elements",
      buffer.numel());
  if (op == ReduceOp::kAvg) {
    buffer.div_(size_);
  }
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  }
}

at::Tensor MpiCommunicator::all_gather(const at::Tensor& tensor) {
  check_tensor(tensor, Op::kAllGather);
  Timed timed(this, Op::kAllGather, &tensor);
  at::Tensor in = host_buffer(tensor);
  at::Tensor out = host_empty(tensor, with_first(tensor, tensor.size(0) * size_));
  const int count = as_count(in.numel(), "all_gather");
  const MPI_Datatype type = mpi_type(in.scalar_type());
  UEL_MPI_CHECK(
      MPI_Allgather(in.data_ptr(), count, type, out.data_ptr(), count, type, comm_),
      "all_gather of {} elements per rank",
      count);
  return out.to(tensor.device());
}

at::Tensor MpiCommunicator::all_gather_v(const at::Tensor& tensor) {
  check_tensor(tensor, Op::kAllGatherV);
  Timed timed(this, Op::kAllGatherV, &tensor);
  at::Tensor in = host_buffer(tensor);
  const int64_t row = row_numel(tensor);
  // Exchange (rows, elements per row) so a shape mismatch is an error, not corrupt data.
  std::vector<int64_t> mine = {tensor.size(0), row};
  std::vector<int64_t> all(2 * size_);
  UEL_MPI_CHECK(
      MPI_Allgather(mine.data(), 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, comm_),
      "all_gather_v sizes");
  std::vector<int> counts(size_), displs(size_);
  int64_t rows = 0, offset = 0;
  for (int r = 0; r < size_; ++r) {
    UEL_CHECK(
        all[2 * r + 1] == row,
        "mpi: all_gather_v rows hold {} elements on rank {} but {} on rank {}",
        row,
        rank_,
        all[2 * r + 1],
        r);
    counts[r] = as_count(all[2 * r] * row, "all_gather_v");
    displs[r] = as_count(offset, "all_gather_v");
    offset += all[2 * r] * row;
    rows += all[2 * r];
  }
  at::Tensor out = host_empty(tensor, with_first(tensor, rows));
  const MPI_Datatype type = mpi_type(in.scalar_type());
  UEL_MPI_CHECK(
      MPI_Allgatherv(
          in.data_ptr(),
          counts[rank_],
          type,
          out.data_ptr(),
          counts.data(),
          displs.data(),
          type,
          comm_),
      "all_gather_v of {} rows",
      rows);
  return out.to(tensor.device());
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_tensor(tensor, Op::kBroadcast);
  UEL_CHECK(root >= 0 && root < size_, "mpi: broadcast root {} outside [0, {})", root, size_);
  Timed timed(this, Op::kBroadcast, &tensor, root);
  at::Tensor buffer = host_buffer(tensor);
  UEL_MPI_CHECK(
      MPI_Bcast(
          buffer.data_ptr(),
          as_count(buffer.numel(), "broadcast"),
          mpi_type(buffer.scalar_type()),
          root,
          comm_),
      "broadcast of {} elements from rank {}",
      buffer.numel(),
      root);
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  }
}

at::Tensor MpiCommunicator::ring_reduce_scatter(const at::Tensor& in, ReduceOp op) {
  // Ring: at step s rank r sends its partial sum of block (r - s - 1) to r + 1 and adds the
  // partial sum of block (r - s - 2) that r - 1 sends; after size - 1 steps it holds block r.
  const int64_t block_rows = in.size(0) / size_;
  auto block = [&](int64_t b) {
    return in.narrow(0, ((b % size_) + size_) % size_ * block_rows, block_rows);
  };
  at::Tensor partial = block(rank_ - 1);
  at::Tensor received = host_empty(in, with_first(in, block_rows));
  const int count = as_count(received.numel(), "reduce_scatter");
  const MPI_Datatype type = mpi_type(in.scalar_type());
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  for (int s = 0; s + 1 < size_; ++s) {
    UEL_MPI_CHECK(
        MPI_Sendrecv(
            partial.data_ptr(),
            count,
            type,
            next,
            s,
            received.data_ptr(),
            count,
            type,
            prev,
            s,
            comm_,
            MPI_STATUS_IGNORE),
        "reduce_scatter step {} of {} ({} elements)",
        s + 1,
        size_ - 1,
        count);
    const at::Tensor own = block(rank_ - s - 2);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        partial = own + received;
        break;
      case ReduceOp::kMax:
        partial = at::maximum(own, received);
        break;
      case ReduceOp::kMin:
        partial = at::minimum(own, received);
        break;
    }
  }
  return partial;
}

at::Tensor MpiCommunicator::reduce_scatter(const at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, Op::kReduceScatter);
  check_reduce(tensor, op, Op::kReduceScatter);
  UEL_CHECK(
      tensor.size(0) % size_ == 0,
      "mpi: reduce_scatter needs a first dimension divisible by the world size {}, got {}",
      size_,
      tensor.size(0));
  Timed timed(this, Op::kReduceScatter, &tensor, static_cast<int64_t>(op));
  at::Tensor in =
      narrow_float(tensor) ? tensor.to(at::kCPU, at::kFloat).contiguous() : host_buffer(tensor);
  const int64_t block_rows = in.size(0) / size_;
  const MPI_Datatype type = mpi_type(in.scalar_type());
  at::Tensor partial;
  if (size_ > 2 && in.nbytes() < kRingMinBytes) {
    // Small buffers: latency dominates, and one all-reduce beats the ring's size - 1 steps.
    at::Tensor whole = in.clone();
    UEL_MPI_CHECK(
        MPI_Allreduce(
            MPI_IN_PLACE,
            whole.data_ptr(),
            as_count(whole.numel(), "reduce_scatter"),
            type,
            mpi_op(op),
            comm_),
        "reduce_scatter of {} elements",
        whole.numel());
    partial = whole.narrow(0, rank_ * block_rows, block_rows);
  } else {
    partial = ring_reduce_scatter(in, op);
  }
  at::Tensor out = size_ == 1 ? partial.clone() : partial;  // alone, partial views the input
  if (op == ReduceOp::kAvg) {
    out.div_(size_);
  }
  return out.to(tensor.device(), tensor.scalar_type());
}

at::Tensor MpiCommunicator::all_to_all_v(
    const at::Tensor& tensor, const std::vector<int64_t>& send_counts) {
  check_tensor(tensor, Op::kAllToAllV);
  UEL_CHECK(
      static_cast<int>(send_counts.size()) == size_,
      "mpi: all_to_all_v needs one send count per rank ({}), got {}",
      size_,
      send_counts.size());
  int64_t total = 0;
  for (int64_t c : send_counts) {
    UEL_CHECK(c >= 0, "mpi: all_to_all_v send counts must be >= 0");
    total += c;
  }
  UEL_CHECK(
      total <= tensor.size(0),
      "mpi: all_to_all_v sends {} rows but the tensor has {}",
      total,
      tensor.size(0));
  Timed timed(this, Op::kAllToAllV, &tensor);
  std::vector<int64_t> recv_rows(size_);
  UEL_MPI_CHECK(
      MPI_Alltoall(send_counts.data(), 1, MPI_INT64_T, recv_rows.data(), 1, MPI_INT64_T, comm_),
      "all_to_all_v counts");
  const int64_t row = row_numel(tensor);
  std::vector<int> scounts(size_), sdispls(size_), rcounts(size_), rdispls(size_);
  int64_t soff = 0, roff = 0, rows = 0;
  for (int r = 0; r < size_; ++r) {
    scounts[r] = as_count(send_counts[r] * row, "all_to_all_v");
    sdispls[r] = as_count(soff, "all_to_all_v");
    rcounts[r] = as_count(recv_rows[r] * row, "all_to_all_v");
    rdispls[r] = as_count(roff, "all_to_all_v");
    soff += send_counts[r] * row;
    roff += recv_rows[r] * row;
    rows += recv_rows[r];
  }
  at::Tensor in = host_buffer(tensor);
  at::Tensor out = host_empty(tensor, with_first(tensor, rows));
  const MPI_Datatype type = mpi_type(in.scalar_type());
  UEL_MPI_CHECK(
      MPI_Alltoallv(
          in.data_ptr(),
          scounts.data(),
          sdispls.data(),
          type,
          out.data_ptr(),
          rcounts.data(),
          rdispls.data(),
          type,
          comm_),
      "all_to_all_v of {} rows",
      total);
  return out.to(tensor.device());
}

void MpiCommunicator::barrier() {
  Timed timed(this, Op::kBarrier, nullptr);
  UEL_MPI_CHECK(MPI_Barrier(comm_), "barrier");
}

std::unique_ptr<Communicator> MpiCommunicator::split() {
  return std::make_unique<MpiCommunicator>(comm_, device());
}

}  // namespace uel::comm
