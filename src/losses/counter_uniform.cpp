#include "counter_uniform.h"

#include <ATen/ATen.h>

namespace uel::losses {

namespace {

// The logical right shift of int64 words (ATen's >> is arithmetic on signed types).
at::Tensor shift_right(const at::Tensor& x, int bits) {
  return at::bitwise_and(at::bitwise_right_shift(x, bits), (int64_t{1} << (64 - bits)) - 1);
}

// uel::mix64 on int64 tensors (multiplication wraps modulo 2^64 as on uint64).
at::Tensor mix64(at::Tensor x) {
  x = at::bitwise_xor(x, shift_right(x, 30)) * static_cast<int64_t>(0xBF58476D1CE4E5B9ULL);
  x = at::bitwise_xor(x, shift_right(x, 27)) * static_cast<int64_t>(0x94D049BB133111EBULL);
  return at::bitwise_xor(x, shift_right(x, 31));
}

}  // namespace

at::Tensor counter_uniform(const at::Tensor& counters, uint64_t key) {
  const at::Tensor sub = mix64(counters + static_cast<int64_t>(0x9E3779B97F4A7C15ULL));
  const at::Tensor bits = mix64(at::bitwise_xor(sub, static_cast<int64_t>(key)));
  return shift_right(bits, 11).to(at::kDouble) * 0x1.0p-53;
}

}  // namespace uel::losses
