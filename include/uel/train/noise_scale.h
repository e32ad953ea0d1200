#pragma once

// The gradient noise scale B_simple = tr(Sigma) / |G|^2 of McCandlish et al. 2018 ("An
// Empirical Model of Large-Batch Training", appendix A): near it, doubling the batch still
// roughly halves the steps a target needs; well above it, larger batches buy few steps. A mean
// gradient over b samples has E ||g_b||^2 = |G|^2 + tr(Sigma) / b, so squared norms measured at
// two batch sizes give both unknowns. Data-parallel training has them for free: each rank's
// gradient (b_small = global batch / ranks) and the all-reduced average (b_big = global batch).

#include <optional>

namespace uel::train {

struct NoiseScale {
  double gradient_sq = 0;  // |G|^2, the true gradient's squared norm
  double trace = 0;        // tr(Sigma), the per-sample gradient's total variance
  // tr(Sigma) / |G|^2 in samples; absent where the |G|^2 estimate is not positive (noise
  // dominates the interval: average over more steps).
  std::optional<double> b_simple;
};

// From squared norms averaged over the same steps (average numerator and denominator separately,
// as the paper advises, not the per-step ratio): `small_sq` of gradients over `b_small` samples,
// `big_sq` over `b_big` > `b_small`.
NoiseScale gradient_noise_scale(double small_sq, double big_sq, double b_small, double b_big);

}  // namespace uel::train
