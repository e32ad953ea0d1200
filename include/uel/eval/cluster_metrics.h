#pragma once

// Agreement between a labelling and a clustering (any integer ids; the two need not share them),
// as sklearn.metrics computes them on the host.

#include <ATen/core/Tensor.h>

namespace uel::eval {

// Normalised mutual information with arithmetic-mean normalisation, MI / ((H(U) + H(V)) / 2), in
// nats (sklearn's default average_method="arithmetic"; ISIF's old sklearn used the geometric
// mean). 1.0 when both sides put every item in one group.
double nmi(const at::Tensor& labels, const at::Tensor& assignments);

// Adjusted Rand index (Hubert and Arabie), sklearn's adjusted_rand_score: 1.0 for identical
// partitions, about 0 for independent ones, negative below chance.
double ari(const at::Tensor& labels, const at::Tensor& assignments);

}  // namespace uel::eval
