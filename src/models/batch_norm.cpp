#include "uel/models/batch_norm.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "uel/core/error.h"

namespace uel::models {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per-channel view shape [1, C, 1, ...] for an input of `dim` dimensions.
std::vector<int64_t> channel_shape(int64_t channels, int64_t dim) {
  std::vector<int64_t> shape(dim, 1);
  shape[1] = channels;
  return shape;
}

// A per-channel vector [C] as a view that broadcasts over x, in x's precision.
at::Tensor per_channel(const at::Tensor& k, const at::Tensor& x) {
  return k.to(x.scalar_type()).view(channel_shape(x.size(1), x.dim()));
}

// Normalises with the global batch's statistics and applies the affine map. Statistics come from
// ATen's batch-norm statistics kernel and the two gradient sums from its inference-mode backward
// (which takes mean and variance as given); what is left is per channel x -> a * x + b, one
// addcmul each way. Written as separate tensor operations the same arithmetic made SyncBatchNorm
// cost a quarter of the Fashion-MNIST step on CPU even at one rank, where nothing is communicated.
struct Normalize : public torch::autograd::Function<Normalize> {
  // Returns y, and mean and unbiased variance (per channel) for the running statistics.
  static variable_list forward(
      AutogradContext* ctx,
      const at::Tensor& x,
      const at::Tensor& weight,
      const at::Tensor& bias,
      int64_t comm_address,
      double eps) {
    auto* comm = reinterpret_cast<comm::Communicator*>(comm_address);
    const int64_t channels = x.size(1);
    const double local_count = static_cast<double>(x.numel() / channels);
    UEL_CHECK(
        local_count > 1 || comm->size() > 1,
        "SyncBatchNorm needs more than one value per channel in the global batch, got input of "
        "shape {}",
        c10::str(x.sizes()));
    // Mean and biased variance of this rank's batch, in the input's precision (no float64 copy of
    // the activations); ranks combine sum and sum of squares in float64.
    auto [local_mean, local_var] = at::batch_norm_update_stats(x, {}, {}, 0.0);
    at::Tensor mean_d = local_mean.to(at::kDouble), var_d = local_var.to(at::kDouble);
    at::Tensor packed = at::cat(
        {mean_d * local_count,
         (var_d + mean_d * mean_d) * local_count,
         at::full({1}, local_count, mean_d.options())});
    comm->all_reduce(packed, comm::ReduceOp::kSum);
    // The global count stays on the device: no host synchronisation per layer.
    const at::Tensor count = packed.narrow(0, 2 * channels, 1);
    mean_d = packed.narrow(0, 0, channels) / count;
    var_d = (packed.narrow(0, channels, channels) / count - mean_d * mean_d).clamp_min(0);
    const at::Tensor alpha = weight.to(at::kDouble) * (var_d + eps).rsqrt();
    const at::Tensor y = at::addcmul(
        per_channel(bias.to(at::kDouble) - mean_d * alpha, x), x, per_channel(alpha, x));
    const at::Tensor mean = mean_d.to(x.scalar_type()), var = var_d.to(x.scalar_type());
    ctx->saved_data["comm"] = comm_address;
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward({x, weight, mean, var, count});
    at::Tensor var_out = (var_d * count / (count - 1)).to(x.scalar_type());
    ctx->mark_non_differentiable({mean, var_out});
    return {y, mean, var_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* comm = reinterpret_cast<comm::Communicator*>(ctx->saved_data["comm"].toInt());
    const double eps = ctx->saved_data["eps"].toDouble();
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &var = saved[3];
    const at::Tensor& count = saved[4];
    const at::Tensor dy = grads[0].contiguous(x.suggest_memory_format());
    const int64_t channels = x.size(1);
    // This rank's sums of dy * x_hat and of dy: the affine parameters' gradients.
    auto [unused, dweight, dbias] = at::native_batch_norm_backward(
        dy,
        x,
        weight,
        mean,
        var,
        at::Tensor(),
        at::Tensor(),
        /*train=*/false,
        eps,
        {false, true, true});
    // d/dx = w * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means over the global
    // batch: one all-reduce of the two per-channel sums. Per channel, dx = k1 dy + k2 x + k3.
    at::Tensor sums = at::cat({dbias, dweight}).to(at::kDouble);
    comm->all_reduce(sums, comm::ReduceOp::kSum);
    const at::Tensor mean_dy = sums.narrow(0, 0, channels) / count;
    const at::Tensor mean_dy_xhat = sums.narrow(0, channels, channels) / count;
    const at::Tensor invstd = (var.to(at::kDouble) + eps).rsqrt();
    const at::Tensor k1 = weight.to(at::kDouble) * invstd;
    const at::Tensor k2 = -k1 * invstd * mean_dy_xhat;
    const at::Tensor k3 = -k1 * mean_dy - k2 * mean.to(at::kDouble);
    at::Tensor dx = at::addcmul(per_channel(k3, x), x, per_channel(k2, x));
    dx.addcmul_(dy, per_channel(k1, x));
    return {dx, dweight, dbias, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

BatchNormImpl::BatchNormImpl(
    int64_t num_features, std::shared_ptr<comm::Communicator> comm, double eps, double momentum)
    : comm_(std::move(comm)), num_features_(num_features), eps_(eps), momentum_(momentum) {
  weight = register_parameter("weight", torch::ones({num_features}));
  bias = register_parameter("bias", torch::zeros({num_features}));
  running_mean = register_buffer("running_mean", torch::zeros({num_features}));
  running_var = register_buffer("running_var", torch::ones({num_features}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

at::Tensor BatchNormImpl::forward(const at::Tensor& input) {
  UEL_CHECK(
      input.dim() >= 2 && input.size(1) == num_features_,
      "BatchNorm over {} channels got input of shape {}",
      num_features_,
      c10::str(input.sizes()));
  // Each rank's own statistics, and eval mode: LibTorch's batch norm (cuDNN on GPUs).
  if (!is_training() || comm_ == nullptr) {
    if (is_training())
      num_batches_tracked.add_(1);
    return at::batch_norm(
        input,
        weight,
        bias,
        running_mean,
        running_var,
        is_training(),
        momentum_,
        eps_,
        /*cudnn_enabled=*/true);
  }
  variable_list out =
      Normalize::apply(input, weight, bias, reinterpret_cast<int64_t>(comm_.get()), eps_);
  {
    torch::NoGradGuard no_grad;
    running_mean.mul_(1 - momentum_).add_(out[1].detach(), momentum_);
    running_var.mul_(1 - momentum_).add_(out[2].detach(), momentum_);
    num_batches_tracked.add_(1);
  }
  return out[0];
}

}  // namespace uel::models
