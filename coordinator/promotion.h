// Promotion: the pure promote-if-better decision of the model registry (coordinator/model_registry.h).
//
// A candidate is promoted when its metric beats the production version's by MORE than `margin` (absolute):
//   lower is better  (eval_loss):      production - candidate > margin
//   higher is better (mmlu_accuracy):  candidate - production > margin
// Every outcome (each has a test row in tests/unit/coordinator/promotion_test.cc):
//   no production version yet                        promoted ("first version": nothing to compare with)
//   the candidate lacks the metric, or it is NaN/inf not promoted, the text names the metric and what the
//                                                    candidate reported
//   production exists but has no comparable value    not promoted: "not comparable", with what to add (an eval
//                                                    step of the production model on the same eval set)
//   the production value is NaN/inf                  not promoted (a broken number never decides)
//   better by more than the margin                   promoted
//   a tie, or better by no more than the margin      not promoted (a tie never replaces production)
//   worse                                            not promoted
// The text always carries both numbers when both exist, the direction, the margin and the eval set.
// Bad parameters (empty metric, negative or non-finite margin) are caught by CheckPromotionParams first.
//
// Thread-safety: pure functions.
//
// Example:
//   PromotionInput in{.metric = "eval_loss", .margin = 0.01, .candidate = 0.81, .production_version = 2,
//                     .production = 0.85, .production_source = "evaluated in pipeline p-7"};
//   PromotionOutcome out = DecidePromotion(in);  // out.promote == true
//   // out.text: "promoted: better by 0.04: candidate eval_loss 0.81 vs production v2's 0.85 (evaluated in
//   //            pipeline p-7); lower is better, margin 0.01"
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/status.h"

namespace anneal::coordinator {

struct PromotionInput {
  std::string metric;
  bool higher_is_better = false;
  double margin = 0;
  std::optional<double> candidate;   // nullopt: the candidate did not report the metric
  std::string candidate_reported;    // the names it did report ("eval_accuracy, eval_loss"), for the message
  uint32_t production_version = 0;   // 0: the model has no production version
  std::optional<double> production;  // nullopt: no comparable production number
  std::string production_source;     // where `production` came from, for the message
  std::string eval_set;
};

struct PromotionOutcome {
  bool promote = false;
  std::string text;  // "promoted: ..." or "not promoted: ..."
};

// INVALID_ARGUMENT naming the parameter: an empty metric, a margin below 0 or not finite.
Status CheckPromotionParams(const std::string& metric, double margin);

PromotionOutcome DecidePromotion(const PromotionInput& in);

// The metric's value in `metrics` (nullopt when absent); `reported` gets the names present, comma-separated.
std::optional<double> MetricValue(const std::map<std::string, double>& metrics, const std::string& metric,
                                  std::string* reported = nullptr);

}  // namespace anneal::coordinator
