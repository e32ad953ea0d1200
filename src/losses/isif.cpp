#include "uel/losses/isif.h"

#include <limits>

#include <ATen/ATen.h>

#include "uel/comm/autograd.h"
#include "uel/core/error.h"

namespace uel::losses {

at::Tensor isif_loss(
    const at::Tensor& embeddings, comm::Communicator& comm, const IsifConfig& config) {
  UEL_CHECK(
      embeddings.dim() == 2 && embeddings.size(0) % 2 == 0 && embeddings.size(0) > 0,
      "isif_loss expects [2b, D] embeddings (two views of b instances), got {}",
      c10::str(embeddings.sizes()));
  const int64_t m = embeddings.size(0), b = m / 2;
  const at::Tensor keys = config.key_grad ? comm::all_gather_with_grad(embeddings, comm)
                                          : comm.all_gather(embeddings.detach());
  UEL_CHECK(keys.size(0) == m * comm.size(), "ranks disagree on the local batch size");

  // Reduced precision is widened to float32: exp(1/T) overflows float16.
  const bool narrow =
      embeddings.scalar_type() == at::kHalf || embeddings.scalar_type() == at::kBFloat16;
  const at::Tensor queries = narrow ? embeddings.to(at::kFloat) : embeddings;
  const at::Tensor logits = queries.matmul(keys.to(queries.scalar_type()).t()) / config.temperature;
  const auto opts = at::TensorOptions().dtype(at::kLong).device(embeddings.device());
  const at::Tensor rows = at::arange(m, opts);
  const at::Tensor self = rows + comm.rank() * m;
  const at::Tensor partner = at::remainder(rows + b, m) + comm.rank() * m;

  const at::Tensor self_mask = at::zeros_like(logits, logits.options().dtype(at::kBool))
                                   .scatter_(1, self.view({m, 1}), true);
  const at::Tensor others = logits.masked_fill(self_mask, -std::numeric_limits<float>::infinity());
  const at::Tensor log_d = at::logsumexp(others, 1, /*keepdim=*/true);
  const at::Tensor log_q = others - log_d;  // log Q_ij; -inf on the diagonal
  const at::Tensor log_p = log_q.gather(1, partner.view({m, 1})).squeeze(1);
  const at::Tensor negative_mask = self_mask.scatter(1, partner.view({m, 1}), true);
  // log(1 - Q) from log Q; log Q < 0 strictly in exact arithmetic, the cap only guards rounding.
  const at::Tensor log_q_negatives =
      log_q.masked_fill(negative_mask, -std::numeric_limits<float>::infinity()).clamp_max(-1e-7);
  const at::Tensor spread = at::log(-at::expm1(log_q_negatives)).sum(1);
  return -(log_p + spread).mean();
}

}  // namespace uel::losses
