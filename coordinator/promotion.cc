// Promotion (coordinator/promotion.h): the pure promote-if-better decision.
#include "coordinator/promotion.h"

#include <fmt/format.h>

#include <cmath>

namespace anneal::coordinator {

namespace {

std::string Num(double v) {
  return fmt::format("{:.6g}", v);
}

std::string OnEvalSet(const std::string& eval_set) {
  return eval_set.empty() ? "" : fmt::format(" on eval set {}", eval_set);
}

}  // namespace

Status CheckPromotionParams(const std::string& metric, double margin) {
  if (metric.empty()) {
    return InvalidArgumentError("promote: the metric to compare is empty (e.g. metric: eval_loss)");
  }
  if (!std::isfinite(margin) || margin < 0) {
    return InvalidArgumentError(
        fmt::format("promote: margin {} must be a finite number >= 0 (how much better the candidate's {} must be)",
                    Num(margin), metric));
  }
  return Status::Ok();
}

std::optional<double> MetricValue(const std::map<std::string, double>& metrics, const std::string& metric,
                                  std::string* reported) {
  if (reported != nullptr) {
    reported->clear();
    for (const auto& [name, value] : metrics) *reported += (reported->empty() ? "" : ", ") + name;
    if (reported->empty()) *reported = "none";
  }
  auto it = metrics.find(metric);
  if (it == metrics.end()) return std::nullopt;
  return it->second;
}

PromotionOutcome DecidePromotion(const PromotionInput& in) {
  const std::string direction = in.higher_is_better ? "higher is better" : "lower is better";
  if (!in.candidate) {
    return {false, fmt::format("not promoted: the candidate reported no '{}' (it reported: {}); the eval step must "
                               "report the metric the promote step compares",
                               in.metric, in.candidate_reported.empty() ? "none" : in.candidate_reported)};
  }
  const double candidate = *in.candidate;
  if (!std::isfinite(candidate)) {
    return {false,
            fmt::format("not promoted: the candidate's {} is {}, not a finite number", in.metric, Num(candidate))};
  }
  if (in.production_version == 0) {
    return {true, fmt::format("promoted: first version in production (no production version to compare with); "
                              "{} {}{}",
                              in.metric, Num(candidate), OnEvalSet(in.eval_set))};
  }
  if (!in.production) {
    return {false,
            fmt::format("not promoted: not comparable: production v{} has no {} recorded{} and the pipeline did not "
                        "evaluate it; add an eval step of the production model on the same eval set and pass its "
                        "metrics to the promote step (production_metrics), or promote by hand (anneal models promote)",
                        in.production_version, in.metric, OnEvalSet(in.eval_set))};
  }
  const double production = *in.production;
  if (!std::isfinite(production)) {
    return {false, fmt::format("not promoted: production v{}'s {} is {} ({}), not a finite number to compare with",
                               in.production_version, in.metric, Num(production), in.production_source)};
  }
  const double gain = in.higher_is_better ? candidate - production : production - candidate;
  const std::string numbers = fmt::format("candidate {} {} vs production v{}'s {} ({}){}; {}, margin {}", in.metric,
                                          Num(candidate), in.production_version, Num(production), in.production_source,
                                          OnEvalSet(in.eval_set), direction, Num(in.margin));
  if (gain > in.margin) return {true, fmt::format("promoted: better by {}: {}", Num(gain), numbers)};
  if (gain == 0) return {false, fmt::format("not promoted: a tie: {}", numbers)};
  if (gain < 0) return {false, fmt::format("not promoted: worse by {}: {}", Num(-gain), numbers)};
  return {false, fmt::format("not promoted: better by only {}, not more than the margin: {}", Num(gain), numbers)};
}

}  // namespace anneal::coordinator
