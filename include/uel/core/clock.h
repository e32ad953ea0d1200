#pragma once

// The one clock of every duration uel measures: printed and logged, never asserted on.

#include <chrono>

namespace uel::core {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace uel::core
