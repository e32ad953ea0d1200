#include "uel/comm/nccl_communicator.h"

#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#ifdef UEL_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "uel/comm/gpu_binding.h"
#include "uel/comm/order_check.h"
#include "uel/comm/watchdog.h"
#include "uel/core/error.h"

namespace uel::comm {

namespace {

// LibTorch's current stream on `device`. A LibTorch built without CUDA has no CUDA tensors to
// hand over (this backend then only builds); the legacy default stream stands in.
cudaStream_t current_stream(int device) {
#ifdef UEL_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  return nullptr;
#endif
}

// Memory the NCCL stream uses must not be handed out again before that stream is done with it.
void record_stream(const at::Tensor& tensor, cudaStream_t stream, int device) {
#ifdef UEL_TORCH_CUDA
  if (tensor.defined() && tensor.numel() > 0) {
    c10::cuda::CUDACachingAllocator::recordStream(
        tensor.storage().data_ptr(),
        c10::cuda::getStreamFromExternal(stream, static_cast<c10::DeviceIndex>(device)));
  }
#endif
}

// An event shared by the Work that waits on it and the watchdog probe that polls it.
struct Event {
  cudaEvent_t event = nullptr;
  Event() {
    UEL_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "creating an event");
  }
  ~Event() {
    cudaEventDestroy(event);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<Event> done, int device) : done_(std::move(done)), device_(device) {}
  void wait() override {
    UEL_CUDA_CHECK(cudaSetDevice(device_), "selecting cuda:{}", device_);
    UEL_CUDA_CHECK(
        cudaStreamWaitEvent(current_stream(device_), done_->event, 0),
        "ordering the current stream after an NCCL collective");
  }

 private:
  std::shared_ptr<Event> done_;
  int device_;
};

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    case at::kByte:
      return ncclUint8;
    default:
      UEL_CHECK(false, "nccl: no NCCL type for {}", c10::toString(t));
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

}  // namespace

NcclCommunicator::NcclCommunicator(
    MPI_Comm bootstrap, int device, std::shared_ptr<OrderCheck> order_check)
    : Communicator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device))),
      device_(device) {
  UEL_MPI_CHECK(MPI_Comm_dup(bootstrap, &bootstrap_), "duplicating the bootstrap communicator");
  MPI_Comm_rank(bootstrap_, &rank_);
  MPI_Comm_size(bootstrap_, &size_);
  ncclUniqueId id;
  if (rank_ == 0) {
    UEL_NCCL_CHECK(ncclGetUniqueId(&id), "creating the NCCL unique id");
  }
  UEL_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, bootstrap_), "broadcasting the NCCL id");
  UEL_CUDA_CHECK(cudaSetDevice(device_), "selecting cuda:{}", device_);
  // Every rank learns every rank's GPU and refuses the same way (ncclCommInitRank would fail on
  // some ranks only, or hang).
  std::array<char, 256> gpu{};
  gethostname(gpu.data(), 200);
  const size_t host_length = std::strlen(gpu.data());
  gpu[host_length] = ' ';
  UEL_CUDA_CHECK(
      cudaDeviceGetPCIBusId(gpu.data() + host_length + 1, 32, device_),
      "reading the PCI bus id of cuda:{}",
      device_);
  std::vector<char> gpus(gpu.size() * size_);
  UEL_MPI_CHECK(
      MPI_Allgather(
          gpu.data(), gpu.size(), MPI_CHAR, gpus.data(), gpu.size(), MPI_CHAR, bootstrap_),
      "exchanging the ranks' GPUs");
  std::vector<std::string> by_rank;
  for (int r = 0; r < size_; ++r)
    by_rank.emplace_back(gpus.data() + r * gpu.size());
  check_distinct_gpus(by_rank);
  UEL_NCCL_CHECK(
      ncclCommInitRank(&comm_, size_, id, rank_),
      "joining NCCL as rank {} of {} on cuda:{} (one GPU per rank: NCCL refuses two ranks on one "
      "GPU)",
      rank_,
      size_,
      device_);
  UEL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating a stream");
  UEL_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "creating an event");
  if (!order_check && check_order_enabled() && size_ > 1) {
    order_check = std::make_shared<OrderCheck>(bootstrap_);
  }
  if (order_check) {
    const int index = order_check->add_communicator();
    set_order_check(std::move(order_check), index);
  }
  ncclComm_t comm = comm_;
  health_check_ = Watchdog::instance().add_health_check([comm]() -> std::string {
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &async) != ncclSuccess || async == ncclSuccess) {
      return "";
    }
    ncclCommAbort(comm);
    return fmt::format("NCCL reported an asynchronous error: {}", ncclGetErrorString(async));
  });
}

NcclCommunicator::~NcclCommunicator() {
  Watchdog::instance().remove_health_check(health_check_);
  Watchdog::instance().wait_all();
  if (comm_ != nullptr)
    ncclCommDestroy(comm_);
  if (ready_ != nullptr)
    cudaEventDestroy(ready_);
  if (stream_ != nullptr)
    cudaStreamDestroy(stream_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && bootstrap_ != MPI_COMM_NULL)
    MPI_Comm_free(&bootstrap_);
}

void NcclCommunicator::check_device(const at::Tensor& tensor, Op op) const {
  check_tensor(tensor, op);
  UEL_CHECK(
      tensor.is_cuda() && tensor.get_device() == device_,
      "nccl: {} needs a CUDA tensor on cuda:{}, got one on {}; use the mpi backend for CPU "
      "tensors",
      op_name(op),
      device_,
      tensor.device().str());
}

template <class F>
std::unique_ptr<Work> NcclCommunicator::run(
    Op op, std::initializer_list<at::Tensor> tensors, F&& enqueue) {
  UEL_CUDA_CHECK(cudaSetDevice(device_), "selecting cuda:{}", device_);
  UEL_CUDA_CHECK(cudaEventRecord(ready_, current_stream(device_)), "recording an event");
  UEL_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0), "ordering the NCCL stream");
  enqueue();
  for (const at::Tensor& t : tensors)
    record_stream(t, stream_, device_);
  auto done = std::make_shared<Event>();
  UEL_CUDA_CHECK(cudaEventRecord(done->event, stream_), "recording an event");
  const int device = device_;
  Watchdog::instance().begin(
      fmt::format("NCCL {} on cuda:{}", op_name(op), device_), [done, device]() {
        UEL_CUDA_CHECK(cudaSetDevice(device), "selecting cuda:{}", device);
        const cudaError_t state = cudaEventQuery(done->event);
        if (state == cudaErrorNotReady)
          return false;
        UEL_CUDA_CHECK(state, "waiting for the collective's completion event");
        return true;
      });
  return std::make_unique<NcclWork>(std::move(done), device_);
}

void NcclCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  at::Tensor buffer = tensor.contiguous();
  all_reduce_async(buffer, op)->wait();
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  }
}

std::unique_ptr<Work> NcclCommunicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  check_device(tensor, Op::kAllReduce);
  check_reduce(tensor, op, Op::kAllReduce);
  UEL_CHECK(tensor.is_contiguous(), "nccl: all_reduce_async needs a contiguous tensor");
  Timed timed(this, Op::kAllReduce, &tensor, static_cast<int64_t>(op));
  return run(Op::kAllReduce, {tensor}, [&] {
    UEL_NCCL_CHECK(
        ncclAllReduce(
            tensor.data_ptr(),
            tensor.data_ptr(),
            tensor.numel(),
            nccl_type(tensor.scalar_type()),
            nccl_op(op),
            comm_,
            stream_),
        "all_reduce of {} elements",
        tensor.numel());
  });
}

at::Tensor NcclCommunicator::all_gather(const at::Tensor& tensor) {
  check_device(tensor, Op::kAllGather);
  Timed timed(this, Op::kAllGather, &tensor);
  at::Tensor in = tensor.contiguous();
  at::Tensor out = at::empty(with_first(tensor, tensor.size(0) * size_), tensor.options());
  run(Op::kAllGather, {in, out}, [&] {
    UEL_NCCL_CHECK(
        ncclAllGather(
            in.data_ptr(), out.data_ptr(), in.numel(), nccl_type(in.scalar_type()), comm_, stream_),
        "all_gather of {} elements per rank",
        in.numel());
  })->wait();
  return out;
}

std::vector<int64_t> NcclCommunicator::exchange(int64_t value) {
  std::vector<int64_t> all(size_);
  UEL_MPI_CHECK(
      MPI_Allgather(&value, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, bootstrap_),
      "exchanging sizes");
  return all;
}

at::Tensor NcclCommunicator::all_gather_v(const at::Tensor& tensor) {
  check_device(tensor, Op::kAllGatherV);
  Timed timed(this, Op::kAllGatherV, &tensor);
  const int64_t row = row_numel(tensor);
  for (int64_t other : exchange(row)) {
    UEL_CHECK(
        other == row,
        "nccl: all_gather_v rows differ in size between ranks ({} vs {})",
        row,
        other);
  }
  const std::vector<int64_t> rows = exchange(tensor.size(0));
  int64_t total = 0;
  for (int64_t r : rows)
    total += r;
  at::Tensor in = tensor.contiguous();
  at::Tensor out = at::empty(with_first(tensor, total), tensor.options());
  const size_t element = in.element_size();
  run(Op::kAllGatherV, {in, out}, [&] {
    // One broadcast per rank inside a group: NCCL has no all-gather with uneven counts.
    UEL_NCCL_CHECK(ncclGroupStart(), "all_gather_v");
    int64_t offset = 0;
    for (int r = 0; r < size_; ++r) {
      const int64_t count = rows[r] * row;
      if (count > 0) {
        UEL_NCCL_CHECK(
            ncclBroadcast(
                in.data_ptr(),
                static_cast<char*>(out.data_ptr()) + offset * element,
                count,
                nccl_type(in.scalar_type()),
                r,
                comm_,
                stream_),
            "all_gather_v from rank {}",
            r);
      }
      offset += count;
    }
    UEL_NCCL_CHECK(ncclGroupEnd(), "all_gather_v");
  })->wait();
  return out;
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_device(tensor, Op::kBroadcast);
  UEL_CHECK(root >= 0 && root < size_, "nccl: broadcast root {} outside [0, {})", root, size_);
  Timed timed(this, Op::kBroadcast, &tensor, root);
  at::Tensor buffer = tensor.contiguous();
  run(Op::kBroadcast, {buffer}, [&] {
    UEL_NCCL_CHECK(
        ncclBroadcast(
            buffer.data_ptr(),
            buffer.data_ptr(),
            buffer.numel(),
            nccl_type(buffer.scalar_type()),
            root,
            comm_,
            stream_),
        "broadcast from rank {}",
        root);
  })->wait();
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  }
}

at::Tensor NcclCommunicator::reduce_scatter(const at::Tensor& tensor, ReduceOp op) {
  check_device(tensor, Op::kReduceScatter);
  check_reduce(tensor, op, Op::kReduceScatter);
  UEL_CHECK(
      tensor.size(0) % size_ == 0,
      "nccl: reduce_scatter needs a first dimension divisible by the world size {}, got {}",
      size_,
      tensor.size(0));
  Timed timed(this, Op::kReduceScatter, &tensor, static_cast<int64_t>(op));
  at::Tensor in = tensor.contiguous();
  at::Tensor out = at::empty(with_first(tensor, tensor.size(0) / size_), tensor.options());
  run(Op::kReduceScatter, {in, out}, [&] {
    UEL_NCCL_CHECK(
        ncclReduceScatter(
            in.data_ptr(),
            out.data_ptr(),
            out.numel(),
            nccl_type(in.scalar_type()),
            nccl_op(op),
            comm_,
            stream_),
        "reduce_scatter of {} elements",
        in.numel());
  })->wait();
  return out;
}

at::Tensor NcclCommunicator::all_to_all_v(
    const at::Tensor& tensor, const std::vector<int64_t>& send_counts) {
  check_device(tensor, Op::kAllToAllV);
  UEL_CHECK(
      static_cast<int>(send_counts.size()) == size_,
      "nccl: all_to_all_v needs one send count per rank ({}), got {}",
      size_,
      send_counts.size());
  Timed timed(this, Op::kAllToAllV, &tensor);
  std::vector<int64_t> recv_rows(size_);
  UEL_MPI_CHECK(
      MPI_Alltoall(
          send_counts.data(), 1, MPI_INT64_T, recv_rows.data(), 1, MPI_INT64_T, bootstrap_),
      "all_to_all_v counts");
  int64_t total_recv = 0, total_send = 0;
  for (int r = 0; r < size_; ++r) {
    total_recv += recv_rows[r];
    total_send += send_counts[r];
  }
  UEL_CHECK(
      total_send <= tensor.size(0),
      "nccl: all_to_all_v sends {} rows of {}",
      total_send,
      tensor.size(0));
  const int64_t row = row_numel(tensor);
  at::Tensor in = tensor.contiguous();
  at::Tensor out = at::empty(with_first(tensor, total_recv), tensor.options());
  const size_t bytes_per_row = row * in.element_size();
  run(Op::kAllToAllV, {in, out}, [&] {
    UEL_NCCL_CHECK(ncclGroupStart(), "all_to_all_v");
    int64_t send_offset = 0, recv_offset = 0;
    for (int r = 0; r < size_; ++r) {
      if (send_counts[r] > 0) {
        UEL_NCCL_CHECK(
            ncclSend(
                static_cast<const char*>(in.data_ptr()) + send_offset * bytes_per_row,
                send_counts[r] * row,
                nccl_type(in.scalar_type()),
                r,
                comm_,
                stream_),
            "sending to rank {}",
            r);
      }
      if (recv_rows[r] > 0) {
        UEL_NCCL_CHECK(
            ncclRecv(
                static_cast<char*>(out.data_ptr()) + recv_offset * bytes_per_row,
                recv_rows[r] * row,
                nccl_type(in.scalar_type()),
                r,
                comm_,
                stream_),
            "receiving from rank {}",
            r);
      }
      send_offset += send_counts[r];
      recv_offset += recv_rows[r];
    }
    UEL_NCCL_CHECK(ncclGroupEnd(), "all_to_all_v");
  })->wait();
  return out;
}

void NcclCommunicator::barrier() {
  Timed timed(this, Op::kBarrier, nullptr);
  UEL_CUDA_CHECK(cudaSetDevice(device_), "selecting cuda:{}", device_);
  UEL_CUDA_CHECK(cudaStreamSynchronize(stream_), "waiting for NCCL work");
  UEL_MPI_CHECK(MPI_Barrier(bootstrap_), "barrier");
}

std::unique_ptr<Communicator> NcclCommunicator::split() {
  return std::make_unique<NcclCommunicator>(bootstrap_, device_, order_check());
}

}  // namespace uel::comm
