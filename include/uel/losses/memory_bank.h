#pragma once

// Instance discrimination with a memory bank (Wu et al., CVPR 2018; the seed is
// lemniscate.pytorch), the bank sharded over ranks (DESIGN.md §3).
//
// The bank holds one row per training item (N x D). Rank r owns rows shard_range(N, r, P) and
// nothing else stores them. A step ships the queries to the rows: the B global query embeddings
// are all-gathered, each rank scores them against its own rows, per-query partial results are
// combined, and query gradients return through all_gather_with_grad's reduce-scatter. Bytes moved
// per step are O(B x D), independent of N and K.
//
// NCE (k > 0), the seed's NCEAverage + NCECriterion. For query f_b with positive row y_b and K
// negative rows n_bk, P(v) = exp(<f_b, v> / T) / Z and Pn = 1 / N:
//   L = -1/B sum_b [ log(P(v_yb) / (P(v_yb) + K Pn + eps))
//                    + sum_k log(K Pn / (P(v_nbk) + K Pn + eps)) ],   eps = 1e-7,
// Z = N * mean(exp(<f, v> / T)) over the first step's B (K + 1) scores, then kept (and
// checkpointed), or tracked by a moving average (z_momentum > 0, a deviation from the seed).
// Every term involves one score, so each rank sums its own terms. Negatives are drawn uniformly
// over all N rows with replacement, as the seed does, by a counter-based hash of (key, query,
// j) computed on the training device: every rank and every world size draws the same [B, K]
// rows, and each rank scores the ones it owns. NCE runs are thus world-size invariant.
//
// Full softmax (k = 0), the seed's LinearAverage:
//   L = 1/B sum_b [ logsumexp_j(<f_b, v_j> / T) - <f_b, v_yb> / T ]   over all N rows;
// per-rank partial sums of exp are combined with one all-reduce of B doubles.
//
// Owners then apply the momentum update v <- normalize(m v + (1 - m) f) to their rows of the
// step's items, after the optimizer step (the seed does it inside backward, from the same values).

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "uel/comm/communicator.h"
#include "uel/core/shard.h"

namespace uel::losses {

// How a rank scores its share of the [B, K] negatives. kCompact packs the pairs it owns (about
// K / P per query) and reads their count on the host; kDense scores all B x K pairs and masks
// those it does not own: P times the work, no host read. kAuto: compact on CPUs, where a host
// read is free, dense on GPUs, where it would stall the stream every step.
enum class NegativeLayout { kAuto, kCompact, kDense };

struct NceConfig {
  int64_t k = 4096;  // negatives per query; 0 = full softmax over all N rows
  double temperature = 0.07;
  double momentum = 0.5;  // weight of the old row in the bank update
  // 0: Z estimated from the first step and kept (the seed). > 0: Z <- z_momentum Z + (1 -
  // z_momentum) Z_step every step (one more all-reduce of two numbers, read on the host), so P(v)
  // stays normalised as the features organise; the fixed Z underestimates it by exp(delta s / T).
  double z_momentum = 0;
  NegativeLayout layout = NegativeLayout::kAuto;  // not an option: tests compare the two
};

// The temperature floor keeps the all-reduced exp sums inside double's range.
void validate(const NceConfig& config);

class MemoryBank {
 public:
  // Rows are drawn as the seed does, Uniform(-a, a) with a = sqrt(3 / D) (E|v|^2 = 1), keyed by
  // (seed, row): every world size starts from the same bank. No communication.
  MemoryBank(
      int64_t size, int64_t dim, uint64_t seed, int rank, int world, at::TensorOptions options);

  int64_t size() const {
    return size_;
  }
  int64_t dim() const {
    return dim_;
  }
  // The global rows this rank owns; rows()[i] is row shard().begin + i.
  ShardRange shard() const {
    return shard_;
  }
  const at::Tensor& rows() const {
    return rows_;
  }
  // Replaces this rank's rows (a checkpoint), converted to the bank's dtype and device.
  void assign(const at::Tensor& rows);

  // NCE normalisation constant Z; negative until the first NCE step estimates it.
  double z() const {
    return z_;
  }
  void set_z(double z) {
    z_ = z;
  }

  // [queries, k] global row indices, uniform over all rows with replacement, on the bank's
  // device: element (b, j) is row floor(u * N), u = (derive_key(key, b k + j) >> 11)
  // 2^-53, the same on every rank, world size and device. No communication.
  at::Tensor draw_negatives(int64_t queries, int64_t k, uint64_t key) const;

  // Momentum update of this rank's rows among `items` ([B] global rows) from `features`
  // ([B, D], rows in the same order). An item listed twice takes its last feature. Runs on the
  // bank's device without reading anything back to the host.
  void update(const at::Tensor& items, const at::Tensor& features, double momentum);

 private:
  int64_t size_;
  int64_t dim_;
  ShardRange shard_;
  at::Tensor rows_;
  double z_ = -1;
};

struct BankLoss {
  // This rank's share of the loss scaled by the world size: averaged over ranks it is the
  // global-batch loss, and its gradient, averaged over ranks (GradSync), is the global one.
  at::Tensor loss;
  at::Tensor queries;  // [B, D] all-gathered features, detached: the bank update's input
  at::Tensor items;    // [B] their rows
};

// features: this rank's [b, D] L2-normalised embeddings; items: their bank rows ([b], int64).
// negatives: for k > 0, draw_negatives(B, k, ...) ([B, k] global rows, B the global batch, the
// same on every rank); ignored for k = 0. Collective: every rank calls it with the same b.
BankLoss bank_loss(
    const at::Tensor& features,
    const at::Tensor& items,
    MemoryBank& bank,
    const NceConfig& config,
    const at::Tensor& negatives,
    comm::Communicator& comm);

}  // namespace uel::losses
