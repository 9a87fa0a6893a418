// Checkpoint retention: which committed checkpoints of a run to delete, as a pure function of the policy in
// the job spec and the checkpoints' steps and metrics. It has one implementation and two callers, so the two
// owners of retention can never disagree: under a coordinator its checkpoint registry decides (and an agent
// deletes), a standalone anneal-train decides for itself; a trainer launched by an agent never deletes.
//
// Policy: keep the latest `save_total_limit` checkpoints by step, and also the best `keep_best` by
// `metric_for_best_model` (smaller is better unless `greater_is_better`; ties go to the earlier step;
// checkpoints without the metric, or with a NaN/Inf one, are never "best"). `save_total_limit` 0 keeps everything.
//
// Thread-safety: pure functions.
//
// Example:
//   const RetentionPolicy policy = RetentionPolicy::Of(spec.train);
//   for (int64_t step : StepsToDelete(policy, {{10, {{"eval_loss", 2.0}}}, {20, {}}, {30, {}}})) ...
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "jobspec/jobspec.h"

namespace anneal::jobspec {

struct RetentionPolicy {
  int64_t save_total_limit = 0;
  int64_t keep_best = 0;
  std::string metric = "eval_loss";
  bool greater_is_better = false;

  static RetentionPolicy Of(const TrainSpec& train);
};

struct ScoredCheckpoint {
  int64_t step = 0;
  std::map<std::string, double> metrics;  // e.g. {"loss": 2.1, "eval_loss": 2.3}
};

// The steps of `committed` to delete, ascending. `committed` may come in any order; duplicates count once.
std::vector<int64_t> StepsToDelete(const RetentionPolicy& policy, const std::vector<ScoredCheckpoint>& committed);

}  // namespace anneal::jobspec
