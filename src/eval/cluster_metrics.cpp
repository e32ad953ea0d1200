#include "uel/eval/cluster_metrics.h"

#include <cmath>
#include <map>
#include <utility>

#include <ATen/ATen.h>

#include "uel/core/error.h"

namespace uel::eval {
namespace {

struct Contingency {
  std::map<std::pair<int64_t, int64_t>, double> cells;
  std::map<int64_t, double> rows, columns;  // labels, clusters
  double n = 0;
};

Contingency contingency(const at::Tensor& labels, const at::Tensor& assignments) {
  UEL_CHECK(
      labels.numel() == assignments.numel(),
      "{} labels for {} cluster assignments",
      labels.numel(),
      assignments.numel());
  const at::Tensor u = labels.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor v = assignments.to(at::kCPU, at::kLong).contiguous();
  const int64_t* a = u.data_ptr<int64_t>();
  const int64_t* b = v.data_ptr<int64_t>();
  Contingency c;
  c.n = static_cast<double>(u.numel());
  for (int64_t i = 0; i < u.numel(); ++i) {
    c.cells[{a[i], b[i]}] += 1;
    c.rows[a[i]] += 1;
    c.columns[b[i]] += 1;
  }
  return c;
}

double entropy(const std::map<int64_t, double>& counts, double n) {
  double h = 0;
  for (const auto& [id, count] : counts)
    h -= count / n * std::log(count / n);
  return h;
}

}  // namespace

double nmi(const at::Tensor& labels, const at::Tensor& assignments) {
  const Contingency c = contingency(labels, assignments);
  // sklearn: one group on both sides (or no items) is a perfect match.
  if (c.rows.size() == c.columns.size() && c.rows.size() <= 1)
    return 1.0;
  double mi = 0;
  for (const auto& [cell, count] : c.cells) {
    const double expected = c.rows.at(cell.first) * c.columns.at(cell.second);
    mi += count / c.n * std::log(count * c.n / expected);
  }
  if (mi <= 0)  // also covers one side with a single group (zero entropy)
    return 0.0;
  const double mean_entropy = (entropy(c.rows, c.n) + entropy(c.columns, c.n)) / 2;
  return mi / mean_entropy;
}

double ari(const at::Tensor& labels, const at::Tensor& assignments) {
  const Contingency c = contingency(labels, assignments);
  // sklearn's pair-confusion form: pairs together in both, in one only, in neither.
  double sum_squares = 0, row_pairs = 0, column_pairs = 0;
  for (const auto& [cell, count] : c.cells)
    sum_squares += count * count;
  for (const auto& [id, count] : c.rows)
    row_pairs += count * count;
  for (const auto& [id, count] : c.columns)
    column_pairs += count * count;
  const double together = sum_squares - c.n;                                   // tp
  const double only_clusters = column_pairs - sum_squares;                     // fp
  const double only_labels = row_pairs - sum_squares;                          // fn
  const double apart = c.n * c.n - only_clusters - only_labels - sum_squares;  // tn
  if (only_clusters == 0 && only_labels == 0)
    return 1.0;
  return 2 * (together * apart - only_labels * only_clusters) /
         ((together + only_labels) * (only_labels + apart) +
          (together + only_clusters) * (only_clusters + apart));
}

}  // namespace uel::eval
