#include "uel/runtime/op_profile.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>

#include <ATen/record_function.h>

#include "uel/core/clock.h"
#include "uel/core/error.h"

namespace uel::runtime {
namespace {

using core::Clock;

// RecordFunction takes plain function pointers, so the profile's state is global.
struct Totals {
  mutable std::mutex mutex;
  std::unordered_map<std::string, OpTime> ops;
  double inside_seconds = 0;
};
std::atomic<Totals*> active{nullptr};

// The ops open on this thread: when each began, and the time of the ops it called so far.
struct Frame {
  Clock::time_point begin;
  double child_seconds = 0;
};
thread_local std::vector<Frame> open_ops;

std::unique_ptr<at::ObserverContext> on_begin(const at::RecordFunction& /*fn*/) {
  open_ops.push_back({Clock::now(), 0.0});
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* /*context*/) {
  Totals* totals = active.load();
  // Ops that began before the profile have no frame; ops ending after it count nowhere.
  if (open_ops.empty() || totals == nullptr)
    return;
  const Frame frame = open_ops.back();
  open_ops.pop_back();
  const double seconds = core::seconds_since(frame.begin);
  if (!open_ops.empty())
    open_ops.back().child_seconds += seconds;
  std::lock_guard<std::mutex> lock(totals->mutex);
  OpTime& op = totals->ops[fn.name()];
  ++op.calls;
  op.self_seconds += seconds - frame.child_seconds;
  if (open_ops.empty())
    totals->inside_seconds += seconds;
}

}  // namespace

OpProfile::OpProfile() {
  Totals* none = nullptr;
  auto totals = std::make_unique<Totals>();
  UEL_CHECK(
      active.compare_exchange_strong(none, totals.get()),
      "an operator profile is already recording in this process; end it before starting another");
  totals.release();
  open_ops.clear();
  handle_ = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_begin, on_end)
          .needsInputs(false)
          .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
}

OpProfile::~OpProfile() {
  at::removeCallback(handle_);
  delete active.exchange(nullptr);
  open_ops.clear();
}

std::vector<OpTime> OpProfile::ops() const {
  const Totals& totals = *active.load();
  std::vector<OpTime> result;
  {
    std::lock_guard<std::mutex> lock(totals.mutex);
    for (const auto& [name, op] : totals.ops) {
      result.push_back(op);
      result.back().name = name;
    }
  }
  std::sort(result.begin(), result.end(), [](const OpTime& a, const OpTime& b) {
    return a.self_seconds > b.self_seconds;
  });
  return result;
}

double OpProfile::inside_seconds() const {
  const Totals& totals = *active.load();
  std::lock_guard<std::mutex> lock(totals.mutex);
  return totals.inside_seconds;
}

}  // namespace uel::runtime
