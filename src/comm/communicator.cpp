#include "uel/comm/communicator.h"

#include <atomic>
#include <chrono>
#include <numeric>

#include <ATen/ATen.h>

#include "uel/comm/order_check.h"
#include "uel/comm/watchdog.h"
#include "uel/core/error.h"

namespace uel::comm {

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::atomic<bool> g_check_order{false};
}  // namespace

void set_check_order(bool enabled) {
  g_check_order = enabled;
}

bool check_order_enabled() {
  return g_check_order;
}

const char* op_name(Op op) {
  switch (op) {
    case Op::kAllReduce:
      return "all_reduce";
    case Op::kAllGather:
      return "all_gather";
    case Op::kAllGatherV:
      return "all_gather_v";
    case Op::kBroadcast:
      return "broadcast";
    case Op::kReduceScatter:
      return "reduce_scatter";
    case Op::kAllToAllV:
      return "all_to_all_v";
    case Op::kBarrier:
      return "barrier";
  }
  return "?";
}

int64_t CommStats::total_bytes() const {
  int64_t total = 0;
  for (const auto& op : ops)
    total += op.bytes;
  return total;
}

double CommStats::total_seconds() const {
  double total = 0;
  for (const auto& op : ops)
    total += op.seconds;
  return total;
}

Communicator::Timed::Timed(Communicator* comm, Op op, const at::Tensor* tensor, int64_t arg)
    : comm_(comm),
      op_(op),
      bytes_(tensor != nullptr ? static_cast<int64_t>(tensor->nbytes()) : 0),
      start_(now_seconds()),
      watchdog_token_(Watchdog::instance().begin(
          fmt::format("{} of {} bytes on the {} backend", op_name(op), bytes_, comm->backend()))) {
  if (comm->order_check_) {
    try {
      comm->order_check_->verify(comm->order_index_, op, tensor, arg);
    } catch (...) {
      Watchdog::instance().end(watchdog_token_);
      throw;
    }
  }
}

Communicator::Timed::~Timed() {
  Watchdog::instance().end(watchdog_token_);
  const double elapsed = now_seconds() - start_;
  std::lock_guard<std::mutex> lock(comm_->stats_mutex_);
  OpStats& s = comm_->stats_.ops[static_cast<int>(op_)];
  ++s.calls;
  s.bytes += bytes_;
  s.seconds += elapsed;
}

Communicator::~Communicator() = default;

void Communicator::set_order_check(std::shared_ptr<OrderCheck> check, int index) {
  order_check_ = std::move(check);
  order_index_ = index;
}

std::unique_ptr<Work> Communicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  all_reduce(tensor, op);
  return std::make_unique<Work>();
}

CommStats Communicator::stats() const {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  return stats_;
}

void Communicator::reset_stats() {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  stats_ = CommStats{};
}

int64_t Communicator::row_numel(const at::Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 1; d < t.dim(); ++d) {
    n *= t.size(d);
  }
  return n;
}

std::vector<int64_t> Communicator::with_first(const at::Tensor& t, int64_t first) {
  std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
  sizes[0] = first;
  return sizes;
}

void Communicator::check_tensor(const at::Tensor& tensor, Op op) const {
  UEL_CHECK(tensor.defined(), "{}: {} of an undefined tensor", backend(), op_name(op));
  const auto t = tensor.scalar_type();
  UEL_CHECK(
      t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16 ||
          t == at::kInt || t == at::kLong || t == at::kByte,
      "{}: {} does not support dtype {}; use float32, float64, float16, bfloat16, int32, int64 "
      "or uint8",
      backend(),
      op_name(op),
      c10::toString(t));
  UEL_CHECK(
      op == Op::kAllReduce || op == Op::kBroadcast || tensor.dim() >= 1,
      "{}: {} needs a tensor with a first dimension",
      backend(),
      op_name(op));
}

void Communicator::check_reduce(const at::Tensor& tensor, ReduceOp reduce, Op op) const {
  UEL_CHECK(
      reduce != ReduceOp::kAvg || at::isFloatingType(tensor.scalar_type()),
      "{}: {} with average needs a floating-point tensor, got {}; sum and divide yourself",
      backend(),
      op_name(op),
      c10::toString(tensor.scalar_type()));
}

double Communicator::all_reduce_scalar(double value, ReduceOp op) {
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble).device(device_));
  all_reduce(t, op);
  return t.item<double>();
}

std::string Communicator::broadcast_string(const std::string& value, int root) {
  const auto on_device = at::TensorOptions().device(device_);
  at::Tensor length = at::full({1}, static_cast<int64_t>(value.size()), on_device.dtype(at::kLong));
  broadcast(length, root);
  const int64_t n = length.item<int64_t>();
  if (n == 0)
    return "";
  at::Tensor bytes = at::empty({n}, at::kByte);
  if (rank() == root)
    std::copy(value.begin(), value.end(), bytes.data_ptr<uint8_t>());
  bytes = bytes.to(device_);
  broadcast(bytes, root);
  bytes = bytes.cpu();
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), n);
}

void LocalCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, Op::kAllReduce);
  check_reduce(tensor, op, Op::kAllReduce);
  Timed timed(this, Op::kAllReduce, &tensor, static_cast<int64_t>(op));
}

at::Tensor LocalCommunicator::all_gather(const at::Tensor& tensor) {
  check_tensor(tensor, Op::kAllGather);
  Timed timed(this, Op::kAllGather, &tensor);
  return tensor.clone();
}

at::Tensor LocalCommunicator::all_gather_v(const at::Tensor& tensor) {
  check_tensor(tensor, Op::kAllGatherV);
  Timed timed(this, Op::kAllGatherV, &tensor);
  return tensor.clone();
}

void LocalCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_tensor(tensor, Op::kBroadcast);
  UEL_CHECK(root == 0, "local: broadcast from rank {} in a world of 1", root);
  Timed timed(this, Op::kBroadcast, &tensor, root);
}

at::Tensor LocalCommunicator::reduce_scatter(const at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, Op::kReduceScatter);
  check_reduce(tensor, op, Op::kReduceScatter);
  Timed timed(this, Op::kReduceScatter, &tensor, static_cast<int64_t>(op));
  return tensor.clone();
}

at::Tensor LocalCommunicator::all_to_all_v(
    const at::Tensor& tensor, const std::vector<int64_t>& send_counts) {
  check_tensor(tensor, Op::kAllToAllV);
  UEL_CHECK(
      send_counts.size() == 1,
      "local: all_to_all_v needs one send count per rank (1), got {}",
      send_counts.size());
  UEL_CHECK(
      send_counts[0] >= 0 && send_counts[0] <= tensor.size(0),
      "local: all_to_all_v sends {} rows but the tensor has {}",
      send_counts[0],
      tensor.size(0));
  Timed timed(this, Op::kAllToAllV, &tensor);
  return tensor.slice(0, 0, send_counts[0]).clone();
}

void LocalCommunicator::barrier() {
  Timed timed(this, Op::kBarrier, nullptr);
}

std::unique_ptr<Communicator> LocalCommunicator::split() {
  return std::make_unique<LocalCommunicator>(device());
}

}  // namespace uel::comm
