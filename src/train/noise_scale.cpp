#include "uel/train/noise_scale.h"

#include "uel/core/error.h"

namespace uel::train {

NoiseScale gradient_noise_scale(double small_sq, double big_sq, double b_small, double b_big) {
  UEL_CHECK(
      b_small > 0 && b_big > b_small,
      "gradient_noise_scale needs 0 < b_small < b_big, got {} and {}",
      b_small,
      b_big);
  NoiseScale out;
  out.gradient_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small);
  out.trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big);
  if (out.gradient_sq > 0)
    out.b_simple = out.trace / out.gradient_sq;
  return out;
}

}  // namespace uel::train
