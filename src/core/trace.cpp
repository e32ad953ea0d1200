#include "uel/core/trace.h"

#include <fmt/format.h>

namespace uel {

namespace {

int64_t microseconds(Tracer::Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

}  // namespace

Tracer::Tracer(int64_t max_events) : max_events_(max_events) {}

void Tracer::set_origin(Clock::time_point origin) {
  std::lock_guard<std::mutex> lock(mutex_);
  origin_ = origin;
}

void Tracer::record(
    std::string name,
    int thread,
    Clock::time_point begin,
    Clock::time_point end,
    std::string args) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (static_cast<int64_t>(events_.size()) >= max_events_) {
    ++dropped_;
    return;
  }
  events_.push_back(
      {std::move(name),
       thread,
       microseconds(begin - origin_),
       microseconds(end - begin),
       std::move(args)});
}

std::string Tracer::json_events(int pid) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  for (const Event& e : events_) {
    // Names are uel's own phase names: no characters that need JSON escaping.
    out += fmt::format(
        R"({{"name": "{}", "ph": "X", "pid": {}, "tid": {}, "ts": {}, "dur": {}, "args": {{{}}}}},)"
        "\n",
        e.name,
        pid,
        e.thread,
        e.begin_us,
        e.duration_us,
        e.args);
  }
  return out;
}

int64_t Tracer::dropped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dropped_;
}

Tracer::Span::Span(Tracer* tracer, const char* name, int thread, std::string args)
    : tracer_(tracer), name_(name), thread_(thread), args_(std::move(args)) {
  if (tracer_ != nullptr)
    begin_ = Clock::now();
}

Tracer::Span::~Span() {
  if (tracer_ != nullptr)
    tracer_->record(name_, thread_, begin_, Clock::now(), std::move(args_));
}

}  // namespace uel
