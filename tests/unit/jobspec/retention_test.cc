// The one retention policy the coordinator's registry and a standalone trainer both apply.
#include "jobspec/retention.h"

#include <gtest/gtest.h>

#include <cmath>

namespace anneal::jobspec {
namespace {

using Steps = std::vector<int64_t>;

ScoredCheckpoint At(int64_t step, std::map<std::string, double> metrics = {}) {
  return {step, std::move(metrics)};
}

TEST(RetentionPolicy, ZeroLimitKeepsEverything) {
  RetentionPolicy p{.save_total_limit = 0, .keep_best = 1};
  EXPECT_EQ(StepsToDelete(p, {At(10), At(20), At(30)}), Steps{});
}

TEST(RetentionPolicy, KeepsTheLatestByStepWhateverTheOrderGiven) {
  RetentionPolicy p{.save_total_limit = 2};
  EXPECT_EQ(StepsToDelete(p, {At(30), At(10), At(40), At(20)}), (Steps{10, 20}));
  EXPECT_EQ(StepsToDelete(p, {At(10), At(10), At(20)}), Steps{}) << "a duplicate step counts once";
}

TEST(RetentionPolicy, AlsoKeepsTheBestBySmallerMetric) {
  RetentionPolicy p{.save_total_limit = 1, .keep_best = 1, .metric = "eval_loss"};
  const auto doomed = StepsToDelete(p, {At(10, {{"eval_loss", 2.0}}), At(20, {{"eval_loss", 1.5}}),
                                        At(30, {{"eval_loss", 1.7}}), At(40, {{"loss", 0.1}})});
  EXPECT_EQ(doomed, (Steps{10, 30})) << "keeps 40 (latest) and 20 (best eval_loss)";
}

TEST(RetentionPolicy, LoadBestModelAtEndKeepsTheBestCheckpoint) {
  TrainSpec train;
  train.save_total_limit = 1;
  EXPECT_EQ(RetentionPolicy::Of(train).keep_best, 0);
  train.load_best_model_at_end = true;
  EXPECT_EQ(RetentionPolicy::Of(train).keep_best, 1) << "the checkpoint exported at the end must survive";
  train.keep_best = 3;
  EXPECT_EQ(RetentionPolicy::Of(train).keep_best, 3);
}

TEST(RetentionPolicy, GreaterIsBetterAndTiesGoToTheEarlierStep) {
  RetentionPolicy p{.save_total_limit = 1, .keep_best = 1, .metric = "accuracy", .greater_is_better = true};
  EXPECT_EQ(StepsToDelete(p, {At(10, {{"accuracy", 0.5}}), At(20, {{"accuracy", 0.9}}), At(30, {{"accuracy", 0.9}}),
                              At(40, {{"accuracy", 0.1}})}),
            (Steps{10, 30}));
}

TEST(RetentionPolicy, CheckpointsWithoutAFiniteMetricAreNeverBest) {
  RetentionPolicy p{.save_total_limit = 1, .keep_best = 2};
  EXPECT_EQ(StepsToDelete(p, {At(10, {{"eval_loss", std::nan("")}}), At(20), At(30, {{"eval_loss", 3.0}}), At(40)}),
            (Steps{10, 20}));
}

TEST(RetentionPolicy, IsReadFromTheTrainSpec) {
  TrainSpec t;
  t.save_total_limit = 3;
  t.keep_best = 1;
  t.metric_for_best_model = "loss";
  t.greater_is_better = true;
  const RetentionPolicy p = RetentionPolicy::Of(t);
  EXPECT_EQ(p.save_total_limit, 3);
  EXPECT_EQ(p.keep_best, 1);
  EXPECT_EQ(p.metric, "loss");
  EXPECT_TRUE(p.greater_is_better);
}

}  // namespace
}  // namespace anneal::jobspec
