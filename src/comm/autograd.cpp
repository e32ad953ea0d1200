#include "uel/comm/autograd.h"

#include <torch/csrc/autograd/custom_function.h>

namespace uel::comm {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct AllGatherWithGrad : public torch::autograd::Function<AllGatherWithGrad> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t comm_address) {
    // saved_data holds IValues; the communicator travels as its address.
    ctx->saved_data["comm"] = comm_address;
    return reinterpret_cast<Communicator*>(comm_address)->all_gather(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    return {comm->reduce_scatter(grads[0].contiguous(), ReduceOp::kSum), at::Tensor()};
  }
};

}  // namespace

at::Tensor all_gather_with_grad(const at::Tensor& x, Communicator& comm) {
  return AllGatherWithGrad::apply(x, reinterpret_cast<int64_t>(&comm));
}

}  // namespace uel::comm
