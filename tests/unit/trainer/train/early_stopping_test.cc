#include "trainer/train/early_stopping.h"

#include <gtest/gtest.h>

#include <vector>

namespace anneal::train {
namespace {

jobspec::TrainSpec Spec(int64_t patience, bool load_best = false, bool greater = false) {
  jobspec::TrainSpec t;
  t.early_stopping_steps = patience;
  t.load_best_model_at_end = load_best;
  t.greater_is_better = greater;
  return t;
}

// Feeds (step, metric) evaluations; returns the step at which Observe said stop (0: never).
int64_t StopStep(const EarlyStopping& s, const std::vector<std::pair<int64_t, double>>& evals, Progress* p) {
  for (const auto& [step, metric] : evals) {
    p->step = step;
    if (s.Observe(metric, p)) return step;
  }
  return 0;
}

TEST(EarlyStopping, StopsAfterPatienceEvaluationsWithoutStrictImprovement) {
  Progress p;
  // 2.0 best; 2.0 is no improvement (strict), 2.1 none: patience 2 spent at step 6.
  EXPECT_EQ(StopStep(EarlyStopping(Spec(2)), {{2, 2.0}, {4, 2.0}, {6, 2.1}, {8, 1.0}}, &p), 6);
  EXPECT_EQ(p.best_step, 2);
  EXPECT_EQ(*p.best_metric, 2.0);
  EXPECT_EQ(p.evals_without_improvement, 2);
}

TEST(EarlyStopping, AnImprovementResetsTheCount) {
  Progress p;
  EXPECT_EQ(StopStep(EarlyStopping(Spec(2)), {{1, 3.0}, {2, 3.5}, {3, 2.5}, {4, 2.6}, {5, 2.4}, {6, 2.5}}, &p), 0);
  EXPECT_EQ(p.best_step, 5);
  EXPECT_EQ(p.evals_without_improvement, 1);
}

TEST(EarlyStopping, GreaterIsBetterFlipsTheComparison) {
  Progress p;
  EXPECT_EQ(StopStep(EarlyStopping(Spec(1, false, true)), {{1, 0.5}, {2, 0.7}, {3, 0.6}}, &p), 3);
  EXPECT_EQ(p.best_step, 2);
}

TEST(EarlyStopping, ContinuesFromRestoredProgress) {
  Progress p;
  p.best_metric = 1.0;
  p.best_step = 10;
  p.evals_without_improvement = 1;  // as a checkpoint recorded it
  EXPECT_EQ(StopStep(EarlyStopping(Spec(2)), {{14, 1.5}}, &p), 14);
}

TEST(EarlyStopping, LoadBestAloneTracksButNeverStops) {
  Progress p;
  const EarlyStopping s(Spec(0, true));
  EXPECT_TRUE(s.tracks());
  EXPECT_EQ(StopStep(s, {{1, 1.0}, {2, 2.0}, {3, 3.0}, {4, 4.0}}, &p), 0);
  EXPECT_EQ(p.best_step, 1);
  Progress untouched;
  EXPECT_EQ(StopStep(EarlyStopping(Spec(0)), {{1, 1.0}}, &untouched), 0);
  EXPECT_FALSE(untouched.best_metric.has_value());
}

}  // namespace
}  // namespace anneal::train
