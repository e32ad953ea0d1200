#pragma once

// A rank's timeline for train.trace: complete events of the Chrome trace format (Perfetto and
// chrome://tracing read it), kept in memory and written once, so tracing costs a clock read and
// a vector append per phase. Events on one thread nest by time, as the viewers draw them.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace uel {

class Tracer {
 public:
  using Clock = std::chrono::steady_clock;
  // Threads of a rank's timeline.
  static constexpr int kMainThread = 0;
  static constexpr int kGradSyncThread = 1;

  // Keeps the first `max_events` events and counts the rest as dropped.
  explicit Tracer(int64_t max_events);

  // Timestamps count from here (each rank sets it after a barrier, so ranks line up).
  void set_origin(Clock::time_point origin);
  // `args`: the members of a JSON object without braces, e.g. R"("bucket": 3)".
  void record(
      std::string name,
      int thread,
      Clock::time_point begin,
      Clock::time_point end,
      std::string args = {});
  // The events as JSON objects, each followed by ",\n" (lists of ranks concatenate), with
  // "pid" = pid (the rank).
  std::string json_events(int pid) const;
  int64_t dropped() const;

  // Records [construction, destruction) on `tracer` when it is not null.
  class Span {
   public:
    Span(Tracer* tracer, const char* name, int thread = kMainThread, std::string args = {});
    ~Span();
    Span(const Span&) = delete;
    Span& operator=(const Span&) = delete;

   private:
    Tracer* tracer_;
    const char* name_;
    int thread_;
    std::string args_;
    Clock::time_point begin_;
  };

 private:
  struct Event {
    std::string name;
    int thread;
    int64_t begin_us;
    int64_t duration_us;
    std::string args;
  };
  mutable std::mutex mutex_;
  std::vector<Event> events_;
  int64_t max_events_;
  int64_t dropped_ = 0;
  Clock::time_point origin_ = Clock::now();
};

}  // namespace uel
