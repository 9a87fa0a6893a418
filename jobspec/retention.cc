#include "jobspec/retention.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace anneal::jobspec {

RetentionPolicy RetentionPolicy::Of(const TrainSpec& train) {
  // load_best_model_at_end exports the best checkpoint at the end: it is kept whatever save_total_limit says.
  const int64_t keep_best = train.load_best_model_at_end ? std::max<int64_t>(train.keep_best, 1) : train.keep_best;
  return {train.save_total_limit, keep_best, train.metric_for_best_model, train.greater_is_better};
}

std::vector<int64_t> StepsToDelete(const RetentionPolicy& policy, const std::vector<ScoredCheckpoint>& committed) {
  if (policy.save_total_limit <= 0) return {};  // keeps every checkpoint (keep_best then only protects)
  std::map<int64_t, const ScoredCheckpoint*> by_step;
  for (const auto& c : committed) by_step.emplace(c.step, &c);

  std::set<int64_t> keep;
  for (auto it = by_step.rbegin(); it != by_step.rend() && keep.size() < static_cast<size_t>(policy.save_total_limit);
       ++it) {
    keep.insert(it->first);
  }
  if (policy.keep_best > 0) {
    std::vector<std::pair<double, int64_t>> scored;  // (metric, step), steps ascending
    for (const auto& [step, c] : by_step) {
      auto m = c->metrics.find(policy.metric);
      if (m != c->metrics.end() && std::isfinite(m->second)) scored.emplace_back(m->second, step);
    }
    std::stable_sort(scored.begin(), scored.end(), [&](const auto& a, const auto& b) {
      return policy.greater_is_better ? a.first > b.first : a.first < b.first;
    });
    for (size_t i = 0; i < scored.size() && i < static_cast<size_t>(policy.keep_best); ++i)
      keep.insert(scored[i].second);
  }
  std::vector<int64_t> out;
  for (const auto& [step, c] : by_step) {
    if (!keep.count(step)) out.push_back(step);
  }
  return out;
}

}  // namespace anneal::jobspec
