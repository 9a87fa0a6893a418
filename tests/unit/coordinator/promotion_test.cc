// The pure promote-if-better decision (coordinator/promotion.h), by table: direction, margin, ties, missing
// and non-finite metrics, no production yet, not comparable.
#include "coordinator/promotion.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace anneal::coordinator {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Row {
  const char* name;
  bool higher_is_better;
  double margin;
  std::optional<double> candidate;
  uint32_t production_version;
  std::optional<double> production;
  bool promote;
  const char* text_has;  // a fragment the decision text must contain
};

TEST(Promotion, DecisionTable) {
  const Row rows[] = {
      {"lower better, better by more than margin", false, 0.01, 0.80, 2, 0.85, true, "promoted: better by 0.05"},
      {"lower better, worse", false, 0, 0.90, 2, 0.85, false, "not promoted: worse by 0.05"},
      {"lower better, tie", false, 0, 0.85, 2, 0.85, false, "not promoted: a tie"},
      {"lower better, better but within margin", false, 0.1, 0.80, 2, 0.85, false, "not more than the margin"},
      {"lower better, better by exactly margin", false, 0.25, 0.5, 2, 0.75, false, "not more than the margin"},
      {"higher better, better", true, 0.01, 0.62, 3, 0.55, true, "promoted: better by 0.07"},
      {"higher better, worse", true, 0, 0.50, 3, 0.55, false, "worse by 0.05"},
      {"higher better, tie", true, 0, 0.55, 3, 0.55, false, "a tie"},
      {"higher better, within margin", true, 0.1, 0.60, 3, 0.55, false, "not more than the margin"},
      {"first version: no production", false, 0.5, 1.23, 0, std::nullopt, true, "first version in production"},
      {"candidate lacks the metric", false, 0, std::nullopt, 2, 0.85, false, "reported no 'eval_loss'"},
      {"candidate lacks the metric, first version", false, 0, std::nullopt, 0, std::nullopt, false,
       "reported no 'eval_loss'"},
      {"candidate NaN", false, 0, kNaN, 2, 0.85, false, "not a finite number"},
      {"candidate inf", true, 0, kInf, 2, 0.85, false, "not a finite number"},
      {"candidate NaN, first version", false, 0, kNaN, 0, std::nullopt, false, "not a finite number"},
      {"production NaN", false, 0, 0.5, 2, kNaN, false, "production v2's eval_loss is nan"},
      {"production -inf", false, 0, 0.5, 2, -kInf, false, "not a finite number to compare with"},
      {"not comparable", false, 0, 0.5, 2, std::nullopt, false, "not comparable: production v2 has no eval_loss"},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    PromotionInput in;
    in.metric = "eval_loss";
    in.higher_is_better = row.higher_is_better;
    in.margin = row.margin;
    in.candidate = row.candidate;
    in.candidate_reported = "eval_accuracy";
    in.production_version = row.production_version;
    in.production = row.production;
    in.production_source = "evaluated in pipeline p-1";
    in.eval_set = "held_out=sha256:ab";
    const PromotionOutcome out = DecidePromotion(in);
    EXPECT_EQ(out.promote, row.promote) << out.text;
    EXPECT_NE(out.text.find(row.text_has), std::string::npos) << out.text;
  }
}

TEST(Promotion, TheTextCarriesBothNumbersTheDirectionMarginAndEvalSet) {
  PromotionInput in{.metric = "mmlu_accuracy",
                    .higher_is_better = true,
                    .margin = 0.01,
                    .candidate = 0.62,
                    .production_version = 4,
                    .production = 0.55,
                    .production_source = "evaluated in pipeline p-7",
                    .eval_set = "mmlu=sha256:ff"};
  const PromotionOutcome out = DecidePromotion(in);
  EXPECT_TRUE(out.promote);
  for (const char* part : {"0.62", "0.55", "production v4", "higher is better", "margin 0.01", "mmlu=sha256:ff",
                           "evaluated in pipeline p-7"}) {
    EXPECT_NE(out.text.find(part), std::string::npos) << part << " missing in: " << out.text;
  }
}

TEST(Promotion, ACandidateWithoutTheMetricIsToldWhatItReported) {
  PromotionInput in{.metric = "eval_loss"};
  std::map<std::string, double> metrics{{"eval_accuracy", 0.5}, {"eval_runtime", 3}};
  in.candidate = MetricValue(metrics, "eval_loss", &in.candidate_reported);
  EXPECT_FALSE(in.candidate.has_value());
  EXPECT_EQ(in.candidate_reported, "eval_accuracy, eval_runtime");
  const PromotionOutcome out = DecidePromotion(in);
  EXPECT_FALSE(out.promote);
  EXPECT_NE(out.text.find("eval_accuracy, eval_runtime"), std::string::npos) << out.text;
}

TEST(Promotion, BadParametersAreRefusedNamingThem) {
  EXPECT_TRUE(CheckPromotionParams("eval_loss", 0).ok());
  EXPECT_TRUE(CheckPromotionParams("eval_loss", 0.5).ok());
  const Status empty = CheckPromotionParams("", 0);
  EXPECT_EQ(empty.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.message().find("metric"), std::string::npos);
  for (double bad : {-0.1, kNaN, kInf}) {
    const Status st = CheckPromotionParams("eval_loss", bad);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("margin"), std::string::npos) << st.message();
  }
}

}  // namespace
}  // namespace anneal::coordinator
