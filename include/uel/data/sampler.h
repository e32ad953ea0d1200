#pragma once

// Samplers decide which items form global batch t of an epoch. The order depends only on
// (seed, epoch), never on the world size; each rank takes its shard_range slice of every global
// batch, so changing the number of ranks splits the same batches differently but never changes
// them.

#include <cstdint>
#include <string>
#include <vector>

namespace uel::data {

class Sampler {
 public:
  Sampler(int64_t global_batch, int rank, int world);
  virtual ~Sampler() = default;
  // ConfigError unless the global batch splits evenly over `world` ranks; the constructor checks
  // it too, callers check it early (before reading data).
  static void check_batch(int64_t global_batch, int world);

  virtual int64_t steps_per_epoch() const = 0;
  // The epoch's global batches back to back: steps_per_epoch() x global_batch() positions,
  // each in [0, num_items).
  virtual std::vector<int64_t> epoch_order(int64_t epoch) const = 0;

  int64_t global_batch() const {
    return global_batch_;
  }
  int64_t local_batch_size() const {
    return global_batch_ / world_;
  }
  // This rank's slice of global batch `step` of `order`.
  std::vector<int64_t> local_batch(const std::vector<int64_t>& order, int64_t step) const;

 protected:
  int64_t global_batch_;
  int rank_;
  int world_;
};

enum class TailPolicy { kDrop, kPad };

// A shuffled pass over all items per epoch (the seeds' DistributedSampler). kDrop ends the epoch
// at the last full batch (what the ISIF criterion requires); kPad completes the last batch with
// items from the start of the epoch's order.
class DistributedSampler : public Sampler {
 public:
  DistributedSampler(
      int64_t num_items,
      int64_t global_batch,
      int rank,
      int world,
      uint64_t seed,
      bool shuffle = true,
      TailPolicy tail = TailPolicy::kDrop);
  int64_t steps_per_epoch() const override;
  std::vector<int64_t> epoch_order(int64_t epoch) const override;

 private:
  int64_t num_items_;
  uint64_t seed_;
  bool shuffle_;
  TailPolicy tail_;
};

// m classes x k items per global batch (metric losses, UDML). Classes are drawn without
// replacement within a batch; each class's items are visited in a reshuffled cycle, so an item
// repeats only after its whole class was seen (or within a batch when the class has < k items).
class ClassBalancedSampler : public Sampler {
 public:
  // labels[i]: class of position i (ground truth or pseudo-labels).
  ClassBalancedSampler(
      std::vector<int64_t> labels,
      int64_t classes_per_batch,
      int64_t items_per_class,
      int rank,
      int world,
      uint64_t seed);
  int64_t steps_per_epoch() const override;
  std::vector<int64_t> epoch_order(int64_t epoch) const override;

 private:
  std::vector<std::vector<int64_t>> members_;  // per class with items, its positions
  int64_t classes_per_batch_;
  int64_t items_per_class_;
  int64_t num_items_;
  uint64_t seed_;
};

// Parses a class filter such as "0-4" or "0,2,5-7" into sorted class ids within
// [0, num_classes); "" or "all" selects every class. `option` names the option in errors.
std::vector<int64_t> parse_class_filter(
    const std::string& spec, int64_t num_classes, const std::string& option = "data.classes");

// Dataset indices whose label is in `classes` (sorted ascending); an error if none.
std::vector<int64_t> select_classes(
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& classes,
    const std::string& what);

}  // namespace uel::data
