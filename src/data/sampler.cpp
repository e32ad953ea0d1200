#include "uel/data/sampler.h"

#include <algorithm>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "uel/core/error.h"
#include "uel/core/rng.h"
#include "uel/core/shard.h"

namespace uel::data {

namespace {}  // namespace

void Sampler::check_batch(int64_t global_batch, int world) {
  UEL_CHECK_CONFIG(global_batch > 0, "--train.batch_size must be positive, got {}", global_batch);
  UEL_CHECK_CONFIG(
      global_batch % world == 0,
      "--train.batch_size {} is not divisible by the world size {}; use a multiple of {}",
      global_batch,
      world,
      world);
}

Sampler::Sampler(int64_t global_batch, int rank, int world)
    : global_batch_(global_batch), rank_(rank), world_(world) {
  UEL_CHECK(world > 0 && rank >= 0 && rank < world, "rank {} of world {}", rank, world);
  check_batch(global_batch, world);
}

std::vector<int64_t> Sampler::local_batch(const std::vector<int64_t>& order, int64_t step) const {
  const ShardRange r = shard_range(global_batch_, rank_, world_);
  const int64_t offset = step * global_batch_;
  UEL_CHECK(
      step >= 0 && offset + global_batch_ <= static_cast<int64_t>(order.size()),
      "step {} outside the epoch's {} batches",
      step,
      order.size() / global_batch_);
  return {order.begin() + offset + r.begin, order.begin() + offset + r.end};
}

DistributedSampler::DistributedSampler(
    int64_t num_items,
    int64_t global_batch,
    int rank,
    int world,
    uint64_t seed,
    bool shuffle,
    TailPolicy tail)
    : Sampler(global_batch, rank, world),
      num_items_(num_items),
      seed_(seed),
      shuffle_(shuffle),
      tail_(tail) {
  UEL_CHECK_DATA(num_items > 0, "cannot sample from an empty dataset");
  UEL_CHECK_CONFIG(
      tail == TailPolicy::kPad || num_items >= global_batch,
      "the dataset has {} items, fewer than one global batch of {}; lower --train.batch_size",
      num_items,
      global_batch);
}

int64_t DistributedSampler::steps_per_epoch() const {
  return tail_ == TailPolicy::kDrop ? num_items_ / global_batch_
                                    : (num_items_ + global_batch_ - 1) / global_batch_;
}

std::vector<int64_t> DistributedSampler::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(num_items_);
  std::iota(order.begin(), order.end(), 0);
  if (shuffle_) {
    Rng rng(stream_key(seed_, RngPurpose::kSampler, 0, epoch));
    shuffle(order, rng);
  }
  const int64_t total = steps_per_epoch() * global_batch_;
  // kPad wraps around (possibly several times for tiny datasets); kDrop truncates.
  for (int64_t i = num_items_; i < total; ++i) {
    order.push_back(order[i % num_items_]);
  }
  order.resize(total);
  return order;
}

ClassBalancedSampler::ClassBalancedSampler(
    std::vector<int64_t> labels,
    int64_t classes_per_batch,
    int64_t items_per_class,
    int rank,
    int world,
    uint64_t seed)
    : Sampler(classes_per_batch * items_per_class, rank, world),
      classes_per_batch_(classes_per_batch),
      items_per_class_(items_per_class),
      num_items_(static_cast<int64_t>(labels.size())),
      seed_(seed) {
  UEL_CHECK_CONFIG(
      classes_per_batch > 0 && items_per_class > 0,
      "class-balanced batches need positive classes per batch and items per class, got {} x {}",
      classes_per_batch,
      items_per_class);
  UEL_CHECK_DATA(!labels.empty(), "cannot sample from an empty dataset");
  const int64_t max_label = *std::max_element(labels.begin(), labels.end());
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(max_label + 1));
  for (int64_t i = 0; i < num_items_; ++i) {
    UEL_CHECK_DATA(labels[i] >= 0, "negative label {} at position {}", labels[i], i);
    by_class[labels[i]].push_back(i);
  }
  for (auto& m : by_class) {
    if (!m.empty()) {
      members_.push_back(std::move(m));
    }
  }
  UEL_CHECK_CONFIG(
      static_cast<int64_t>(members_.size()) >= classes_per_batch,
      "{} classes per batch requested but the data has only {} classes",
      classes_per_batch,
      members_.size());
}

int64_t ClassBalancedSampler::steps_per_epoch() const {
  return std::max<int64_t>(1, num_items_ / global_batch_);
}

std::vector<int64_t> ClassBalancedSampler::epoch_order(int64_t epoch) const {
  Rng rng(stream_key(seed_, RngPurpose::kSampler, 0, epoch));
  const int64_t num_classes = static_cast<int64_t>(members_.size());
  std::vector<std::vector<int64_t>> pools = members_;
  std::vector<size_t> cursor(pools.size(), 0);
  for (auto& pool : pools) {
    shuffle(pool, rng);
  }
  std::vector<int64_t> classes(num_classes);
  std::iota(classes.begin(), classes.end(), 0);

  std::vector<int64_t> order;
  order.reserve(steps_per_epoch() * global_batch_);
  for (int64_t step = 0; step < steps_per_epoch(); ++step) {
    // Partial Fisher-Yates: the first m entries become m distinct random classes.
    for (int64_t c = 0; c < classes_per_batch_; ++c) {
      std::swap(classes[c], classes[c + rng.below(num_classes - c)]);
    }
    for (int64_t c = 0; c < classes_per_batch_; ++c) {
      auto& pool = pools[classes[c]];
      size_t& at = cursor[classes[c]];
      for (int64_t k = 0; k < items_per_class_; ++k) {
        if (at == pool.size()) {
          shuffle(pool, rng);
          at = 0;
        }
        order.push_back(pool[at++]);
      }
    }
  }
  return order;
}

std::vector<int64_t> parse_class_filter(
    const std::string& spec, int64_t num_classes, const std::string& option) {
  std::vector<int64_t> classes;
  if (spec.empty() || spec == "all") {
    classes.resize(num_classes);
    std::iota(classes.begin(), classes.end(), 0);
    return classes;
  }
  std::stringstream items(spec);
  std::string item;
  while (std::getline(items, item, ',')) {
    int64_t lo = 0, hi = 0;
    size_t used = 0;
    const size_t dash = item.find('-', 1);
    try {
      lo = std::stoll(item.substr(0, dash), &used);
      if (used != (dash == std::string::npos ? item.size() : dash)) {
        throw std::invalid_argument(item);
      }
      hi = lo;
      if (dash != std::string::npos) {
        const std::string tail = item.substr(dash + 1);
        hi = std::stoll(tail, &used);
        if (used != tail.size()) {
          throw std::invalid_argument(item);
        }
      }
    } catch (const std::exception&) {
      UEL_CHECK_CONFIG(
          false,
          "--{}='{}': '{}' is not a class id or range; write e.g. 0-4 or 0,2,5-7",
          option,
          spec,
          item);
    }
    UEL_CHECK_CONFIG(
        lo >= 0 && lo <= hi && hi < num_classes,
        "--{}='{}': range '{}' is outside the dataset's classes 0-{}",
        option,
        spec,
        item,
        num_classes - 1);
    for (int64_t c = lo; c <= hi; ++c) {
      classes.push_back(c);
    }
  }
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  UEL_CHECK_CONFIG(!classes.empty(), "--{}='{}' selects no class", option, spec);
  return classes;
}

std::vector<int64_t> select_classes(
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& classes,
    const std::string& what) {
  std::vector<int64_t> selected;
  for (int64_t i = 0; i < static_cast<int64_t>(labels.size()); ++i) {
    if (std::binary_search(classes.begin(), classes.end(), labels[i])) {
      selected.push_back(i);
    }
  }
  UEL_CHECK_DATA(
      !selected.empty(),
      "the class filter selects no image of {}; check --data.classes against its labels",
      what);
  return selected;
}

}  // namespace uel::data
