#include <fmt/ranges.h>

#include "factories.h"
#include "uel/core/error.h"

namespace uel::methods {
namespace {

struct Entry {
  const char* name;
  std::unique_ptr<Method> (*make)(const MethodConfig&, const MethodSetup&);
  void (*validate)(const MethodConfig&);  // null: nothing to check beyond parsing
  int views;
  bool keeps_train_features;
  bool sums_over_samples;
  bool rank_gradients_independent;
};

// The one list of methods.
const Entry kMethods[] = {
    {"isif",
     make_isif,
     validate_isif,
     /*views=*/2,
     /*keeps_train_features=*/false,
     /*sums_over_samples=*/false,
     /*rank_gradients_independent=*/true},
    {"nce",
     make_nce,
     validate_nce,
     /*views=*/1,
     /*keeps_train_features=*/true,
     /*sums_over_samples=*/true,
     /*rank_gradients_independent=*/true},
    {"udml",
     make_udml,
     validate_udml,
     /*views=*/1,
     /*keeps_train_features=*/false,
     /*sums_over_samples=*/false,
     /*rank_gradients_independent=*/false},
    {"margin",
     make_margin,
     validate_margin,
     /*views=*/1,
     /*keeps_train_features=*/false,
     /*sums_over_samples=*/false,
     /*rank_gradients_independent=*/false},
};

const Entry& find(const std::string& name) {
  const Entry* found = nullptr;
  for (const Entry& entry : kMethods) {
    if (name == entry.name)
      found = &entry;
  }
  UEL_CHECK_CONFIG(
      found != nullptr,
      "--train.method='{}' is not a method; use one of {}",
      name,
      fmt::join(method_names(), ", "));
  return *found;
}

}  // namespace

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const Entry& entry : kMethods)
    names.emplace_back(entry.name);
  return names;
}

void validate(const MethodConfig& config) {
  const Entry& entry = find(config.name);
  if (entry.validate != nullptr)
    entry.validate(config);
}

int views(const MethodConfig& config) {
  // udml.instance_weight adds ISIF's second view to UDML-SS.
  if (config.name == "udml" && config.udml.instance_weight > 0)
    return 2;
  return find(config.name).views;
}

std::string cross_rank_gradients(const MethodConfig& config) {
  if (!find(config.name).rank_gradients_independent)
    return fmt::format("--train.method={}", config.name);
  // isif.key_grad differentiates through the all-gathered keys, into other ranks' samples.
  if (config.name == "isif" && config.isif.key_grad)
    return "--train.method=isif with --isif.key_grad=true";
  return "";
}

bool keeps_train_features(const MethodConfig& config) {
  return find(config.name).keeps_train_features;
}

bool sums_over_samples(const MethodConfig& config) {
  return find(config.name).sums_over_samples;
}

std::unique_ptr<Method> make_method(const MethodConfig& config, const MethodSetup& setup) {
  return find(config.name).make(config, setup);
}

}  // namespace uel::methods
