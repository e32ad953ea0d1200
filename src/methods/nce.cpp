// Instance discrimination with a sharded memory bank (Wu et al., CVPR 2018): NCE with K
// negatives, or the full softmax over the bank (nce.k = 0).

#include <filesystem>
#include <vector>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "factories.h"
#include "uel/core/error.h"
#include "uel/core/rng.h"
#include "uel/data/row_shard.h"

namespace uel::methods {
namespace {

namespace fs = std::filesystem;

class Nce final : public Method {
 public:
  Nce(const losses::NceConfig& config, const MethodSetup& setup)
      : config_(config),
        comm_(setup.comm),
        seed_(setup.seed),
        dtype_(setup.options.dtype().toScalarType()),
        // One row per training item, indexed by sampler position.
        bank_(
            setup.train_items,
            setup.embedding_dim,
            setup.seed,
            setup.comm->rank(),
            setup.comm->size(),
            setup.options) {}

  const std::string& name() const override {
    static const std::string name = "nce";
    return name;
  }
  at::Tensor loss(const data::Batch& batch, const StepContext& step) override {
    const at::Tensor features = step.model->forward(batch.views[0].to(dtype_));
    at::Tensor negatives;
    if (config_.k > 0) {
      negatives = bank_.draw_negatives(
          features.size(0) * comm_->size(),
          config_.k,
          stream_key(seed_, RngPurpose::kNegatives, step.micro_batch, step.global_step));
    }
    pending_.push_back(losses::bank_loss(features, batch.items, bank_, config_, negatives, *comm_));
    return pending_.back().loss;
  }
  void after_step() override {
    torch::NoGradGuard no_grad;
    for (const losses::BankLoss& done : pending_)
      bank_.update(done.items, done.queries, config_.momentum);
    pending_.clear();
  }
  void save(const std::string& dir) const override {
    data::RowShard shard;
    shard.rows = bank_.rows();
    shard.begin = bank_.shard().begin;
    shard.total = bank_.size();
    shard.values["z"] = bank_.z();
    data::write_row_shard(data::row_shard_path(dir, comm_->rank()), shard);
  }
  void load(const std::string& dir, int saved_world_size) override {
    // Any world size: this rank reads its rows from whichever of the saved shards hold them.
    std::vector<std::string> paths;
    for (int r = 0; r < saved_world_size; ++r)
      paths.push_back(data::row_shard_path(dir, r));
    UEL_CHECK_DATA(
        fs::exists(paths[0]),
        "'{}' has no memory-bank shards (shard-0000.h5): it was not saved by --train.method=nce; "
        "start from its weights with --model.weights={}/model.pt instead",
        dir,
        dir);
    const ShardRange shard = bank_.shard();
    const data::RowShard rows =
        data::read_rows(paths, shard.begin, shard.end, bank_.rows().scalar_type());
    UEL_CHECK_DATA(
        rows.total == bank_.size(),
        "'{}' holds a memory bank of {} rows, the training set has {}: another dataset, class "
        "filter or validation split",
        dir,
        rows.total,
        bank_.size());
    bank_.assign(rows.rows);
    bank_.set_z(rows.values.count("z") ? rows.values.at("z") : -1);
  }
  // The bank's shard is the shard_range of the training positions that Trainer::embed uses.
  at::Tensor train_features() const override {
    return bank_.rows();
  }
  std::string divergence_hint() const override {
    return "raise --nce.temperature";
  }

 private:
  losses::NceConfig config_;
  std::shared_ptr<comm::Communicator> comm_;
  uint64_t seed_;
  at::ScalarType dtype_;
  losses::MemoryBank bank_;
  // The step's queries and rows (one entry per micro-batch), for the update after the
  // optimizer: every micro-batch of a step sees the bank as the step began.
  std::vector<losses::BankLoss> pending_;
};

}  // namespace

std::unique_ptr<Method> make_nce(const MethodConfig& config, const MethodSetup& setup) {
  return std::make_unique<Nce>(config.nce, setup);
}

void validate_nce(const MethodConfig& config) {
  losses::validate(config.nce);
}

}  // namespace uel::methods
