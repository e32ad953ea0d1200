#pragma once

// Counter-based uniform draws on tensors (private to src/losses).

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace uel::losses {

// Element i is (uel::derive_key(key, counters[i]) >> 11) * 2^-53 in float64, on the counters'
// device: bit for bit what the host computes, so a draw depends on (key, counter) only, never on
// the rank, the world size or the device. counters: int64.
at::Tensor counter_uniform(const at::Tensor& counters, uint64_t key);

}  // namespace uel::losses
