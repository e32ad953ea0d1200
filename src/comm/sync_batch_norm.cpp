#include "uel/comm/sync_batch_norm.h"

#include <torch/csrc/autograd/custom_function.h>

#include "uel/core/error.h"

namespace uel::comm {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per-channel view shape [1, C, 1, ...] for an input of `dim` dimensions.
std::vector<int64_t> channel_shape(int64_t channels, int64_t dim) {
  std::vector<int64_t> shape(dim, 1);
  shape[1] = channels;
  return shape;
}

std::vector<int64_t> reduce_dims(int64_t dim) {
  std::vector<int64_t> dims = {0};
  for (int64_t d = 2; d < dim; ++d)
    dims.push_back(d);
  return dims;
}

// Normalises with global statistics; the affine part stays outside in plain autograd.
struct SyncNormalize : public torch::autograd::Function<SyncNormalize> {
  // Returns x_hat; mean and invstd (per channel) are saved for the running statistics.
  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& x, int64_t comm_address, double eps) {
    auto* comm = reinterpret_cast<Communicator*>(comm_address);
    const int64_t channels = x.size(1);
    const auto dims = reduce_dims(x.dim());
    // Local mean and centred sum of squares in the input's precision (no float64 copy of the
    // activations); ranks combine sum and sum of squares in float64.
    const double local_count = static_cast<double>(x.numel() / channels);
    auto [local_var, local_mean] = at::var_mean(x, dims, /*unbiased=*/false);
    at::Tensor mean_d = local_mean.to(at::kDouble);
    at::Tensor packed = at::cat(
        {mean_d * local_count,
         local_var.to(at::kDouble) * local_count + mean_d * mean_d * local_count,
         at::full({1}, local_count, mean_d.options())});
    comm->all_reduce(packed, ReduceOp::kSum);
    // The global count stays on the device: no host synchronisation per layer. Only a world of
    // one rank can have a single value per channel.
    UEL_CHECK(
        local_count > 1 || comm->size() > 1,
        "SyncBatchNorm needs more than one value per channel in the global batch");
    const at::Tensor count = packed.narrow(0, 2 * channels, 1);
    at::Tensor mean = packed.narrow(0, 0, channels) / count;
    at::Tensor var = (packed.narrow(0, channels, channels) / count - mean * mean).clamp_min(0);
    at::Tensor invstd = (var + eps).rsqrt();
    const auto shape = channel_shape(channels, x.dim());
    at::Tensor x_hat =
        (x - mean.to(x.scalar_type()).view(shape)) * invstd.to(x.scalar_type()).view(shape);
    ctx->saved_data["comm"] = comm_address;
    ctx->save_for_backward({x_hat, invstd.to(x.scalar_type()), count});
    // Mean and unbiased variance feed the running statistics only.
    at::Tensor mean_out = mean.to(x.scalar_type());
    at::Tensor var_out = (var * count / (count - 1)).to(x.scalar_type());
    ctx->mark_non_differentiable({mean_out, var_out});
    return {x_hat, mean_out, var_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x_hat = saved[0];
    const at::Tensor& invstd = saved[1];
    const at::Tensor& count = saved[2];
    const at::Tensor& dy = grads[0];
    const int64_t channels = x_hat.size(1);
    const auto dims = reduce_dims(x_hat.dim());
    const auto shape = channel_shape(channels, x_hat.dim());
    // d/dx of x_hat = invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means over the
    // global batch: one all-reduce of the two per-channel sums.
    at::Tensor packed = at::cat({dy.sum(dims), (dy * x_hat).sum(dims)}).to(at::kDouble);
    comm->all_reduce(packed, ReduceOp::kSum);
    at::Tensor mean_dy = (packed.narrow(0, 0, channels) / count).to(dy.scalar_type()).view(shape);
    at::Tensor mean_dy_xhat =
        (packed.narrow(0, channels, channels) / count).to(dy.scalar_type()).view(shape);
    at::Tensor dx = invstd.view(shape) * (dy - mean_dy - x_hat * mean_dy_xhat);
    return {dx, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

SyncBatchNormImpl::SyncBatchNormImpl(
    int64_t num_features, std::shared_ptr<Communicator> comm, double eps, double momentum)
    : comm_(std::move(comm)), num_features_(num_features), eps_(eps), momentum_(momentum) {
  UEL_CHECK(comm_ != nullptr, "SyncBatchNorm needs a communicator");
  weight = register_parameter("weight", torch::ones({num_features}));
  bias = register_parameter("bias", torch::zeros({num_features}));
  running_mean = register_buffer("running_mean", torch::zeros({num_features}));
  running_var = register_buffer("running_var", torch::ones({num_features}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

at::Tensor SyncBatchNormImpl::forward(const at::Tensor& input) {
  UEL_CHECK(
      input.dim() >= 2 && input.size(1) == num_features_,
      "SyncBatchNorm over {} channels got input of shape {}",
      num_features_,
      c10::str(input.sizes()));
  const auto shape = channel_shape(num_features_, input.dim());
  if (!is_training()) {
    at::Tensor x_hat =
        (input - running_mean.view(shape)) * (running_var.view(shape) + eps_).rsqrt();
    return x_hat * weight.view(shape) + bias.view(shape);
  }
  variable_list out = SyncNormalize::apply(input, reinterpret_cast<int64_t>(comm_.get()), eps_);
  {
    torch::NoGradGuard no_grad;
    running_mean.mul_(1 - momentum_).add_(out[1].detach(), momentum_);
    running_var.mul_(1 - momentum_).add_(out[2].detach(), momentum_);
    num_batches_tracked.add_(1);
  }
  return out[0] * weight.view(shape) + bias.view(shape);
}

}  // namespace uel::comm
