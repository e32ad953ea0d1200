#pragma once

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"

namespace uel::comm {

// All-gathers x (dim 0) with a gradient: backward reduce-scatters (sums) the incoming gradient,
// so rank r receives the sum over ranks of d(loss_s)/d(x_r). With each rank's loss the mean over
// its own queries and gradients averaged over ranks (GradSync), N ranks with batch b compute the
// gradient 1 rank computes with batch N*b. (The widely copied "GatherLayer" returns only the
// local slice of the gradient, which is wrong.) `comm` must outlive the backward pass.
at::Tensor all_gather_with_grad(const at::Tensor& x, Communicator& comm);

}  // namespace uel::comm
