#include "uel/comm/order_check.h"

#include <array>
#include <map>
#include <vector>

#include <fmt/ranges.h>

#include "uel/core/error.h"

namespace uel::comm {

namespace {

constexpr int kFields = 6;  // sequence, communicator, op, dtype, count, arg
using Fingerprint = std::array<int64_t, kFields>;

std::string describe(const Fingerprint& f) {
  const Op op = static_cast<Op>(f[2]);
  std::string text = fmt::format("#{} {} on communicator {}", f[0], op_name(op), f[1]);
  if (f[3] >= 0) {
    text += fmt::format(" {} x {}", c10::toString(static_cast<at::ScalarType>(f[3])), f[4]);
  }
  if (op == Op::kBroadcast) {
    text += fmt::format(" from rank {}", f[5]);
  } else if (op == Op::kAllReduce || op == Op::kReduceScatter) {
    static const char* kReduce[] = {"sum", "avg", "max", "min"};
    text += fmt::format(" ({})", f[5] >= 0 && f[5] < 4 ? kReduce[f[5]] : "?");
  }
  return text;
}

}  // namespace

OrderCheck::OrderCheck(MPI_Comm comm) {
  UEL_MPI_CHECK(MPI_Comm_dup(comm, &comm_), "duplicating a communicator for comm.check_order");
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

OrderCheck::~OrderCheck() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL)
    MPI_Comm_free(&comm_);
}

int OrderCheck::add_communicator() {
  std::lock_guard<std::mutex> lock(mutex_);
  return communicators_++;
}

int64_t OrderCheck::verified() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return sequence_;
}

void OrderCheck::verify(int communicator, Op op, const at::Tensor* tensor, int64_t arg) {
  std::lock_guard<std::mutex> lock(mutex_);
  Fingerprint mine{sequence_++, communicator, static_cast<int64_t>(op), -1, 0, arg};
  if (tensor != nullptr) {
    mine[3] = static_cast<int64_t>(tensor->scalar_type());
    // The v-collectives legitimately differ in rows between ranks: compare a row's elements.
    int64_t count = tensor->numel();
    if (op == Op::kAllGatherV || op == Op::kAllToAllV) {
      count = 1;
      for (int64_t d = 1; d < tensor->dim(); ++d)
        count *= tensor->size(d);
    }
    mine[4] = count;
  }
  std::vector<int64_t> all(static_cast<size_t>(kFields) * size_);
  UEL_MPI_CHECK(
      MPI_Allgather(mine.data(), kFields, MPI_INT64_T, all.data(), kFields, MPI_INT64_T, comm_),
      "comm.check_order: exchanging the fingerprint of {}",
      describe(mine));
  // Group the ranks by the collective they are at; one group means all agree.
  std::map<Fingerprint, std::vector<int>> groups;
  for (int r = 0; r < size_; ++r) {
    Fingerprint f;
    std::copy_n(all.begin() + static_cast<size_t>(r) * kFields, kFields, f.begin());
    groups[f].push_back(r);
  }
  if (groups.size() == 1)
    return;
  std::vector<std::string> entries;
  for (const auto& [f, ranks] : groups) {
    entries.push_back(fmt::format("rank {}: {}", fmt::join(ranks, ","), describe(f)));
  }
  UEL_CHECK_TYPED(
      CommError,
      false,
      "comm.check_order: ranks issue different collectives at collective #{}: {}. Every rank "
      "must issue the same collectives in the same order, whatever thread issues them",
      mine[0],
      fmt::join(entries, "; "));
}

}  // namespace uel::comm
