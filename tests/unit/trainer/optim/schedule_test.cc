// LR schedules against transformers.get_scheduler: the expected values were printed by transformers 5.23
// (SGD at lr 2e-4, the lr before each of the optimizer steps), so this test pins our schedule to the peer's.
#include "trainer/optim/schedule.h"

#include <gtest/gtest.h>

namespace anneal::optim {
namespace {

void ExpectSchedule(const std::string& type, int64_t total, int64_t warmup, double ratio,
                    const std::vector<double>& expected) {
  auto s = LrSchedule::Make(type, 2e-4, total, warmup, ratio);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(static_cast<int64_t>(expected.size()), total);
  for (int64_t step = 0; step < total; ++step) {
    EXPECT_NEAR(s->LrAt(step), expected[step], 1e-12) << type << " step " << step;
  }
}

const std::vector<double> kLinearWarm3 = {0.0,
                                          6.666666666666667e-05,
                                          0.00013333333333333334,
                                          0.0002,
                                          0.00017142857142857143,
                                          0.00014285714285714287,
                                          0.00011428571428571428,
                                          8.571428571428571e-05,
                                          5.714285714285714e-05,
                                          2.857142857142857e-05};
const std::vector<double> kCosineWarm3 = {0.0,
                                          6.666666666666667e-05,
                                          0.00013333333333333334,
                                          0.0002,
                                          0.0001900968867902419,
                                          0.00016234898018587337,
                                          0.00012225209339563145,
                                          7.774790660436858e-05,
                                          3.7651019814126654e-05,
                                          9.903113209758096e-06};

TEST(LrSchedule, LinearMatchesTransformers) {
  ExpectSchedule("linear", 10, 3, 0, kLinearWarm3);
  ExpectSchedule("linear", 7, 0, 0,
                 {0.0002, 0.00017142857142857143, 0.00014285714285714287, 0.00011428571428571428, 8.571428571428571e-05,
                  5.714285714285714e-05, 2.857142857142857e-05});
}

TEST(LrSchedule, CosineMatchesTransformers) {
  ExpectSchedule("cosine", 10, 3, 0, kCosineWarm3);
  ExpectSchedule("cosine", 7, 0, 0,
                 {0.0002, 0.0001900968867902419, 0.00016234898018587337, 0.00012225209339563145, 7.774790660436858e-05,
                  3.7651019814126654e-05, 9.903113209758096e-06});
}

TEST(LrSchedule, ConstantSchedulesMatchTransformers) {
  ExpectSchedule("constant", 10, 3, 0, std::vector<double>(10, 2e-4));
  ExpectSchedule(
      "constant_with_warmup", 10, 3, 0,
      {0.0, 6.666666666666667e-05, 0.00013333333333333334, 0.0002, 0.0002, 0.0002, 0.0002, 0.0002, 0.0002, 0.0002});
}

TEST(LrSchedule, WarmupRatioRoundsUpLikeTrainingArguments) {
  // ceil(10 * 0.25) = 3 warmup steps, as TrainingArguments.get_warmup_steps.
  ExpectSchedule("linear", 10, 0, 0.25, kLinearWarm3);
  auto s = LrSchedule::Make("cosine", 2e-4, 10, 0, 0.25);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->warmup_steps(), 3);
  // warmup_steps wins over the ratio.
  auto w = LrSchedule::Make("linear", 2e-4, 10, 3, 0.9);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->warmup_steps(), 3);
}

TEST(LrSchedule, UnknownTypeIsRefusedByName) {
  auto s = LrSchedule::Make("polynomial_warp", 2e-4, 10, 0, 0);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("polynomial_warp"), std::string::npos) << s.status().message();
}

}  // namespace
}  // namespace anneal::optim
