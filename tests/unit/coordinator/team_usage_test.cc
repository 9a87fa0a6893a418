// Fair-share usage (coordinator/usage.h, coordinator/team_usage.h): the decay is exponential with the
// half-life, accrual does not depend on how often it is called, and the usage survives a restart.
#include "coordinator/team_usage.h"

#include <gtest/gtest.h>

#include "coordinator/usage.h"
#include "temp_store.h"

namespace anneal::coordinator {
namespace {

constexpr int64_t kHour = 3600 * 1000;

TEST(Usage, HalvesEveryHalfLifeAndZeroHalfLifeMeansNoDecay) {
  EXPECT_DOUBLE_EQ(AccrueUsage(1000, 0, kHour, kHour), 500);
  EXPECT_DOUBLE_EQ(AccrueUsage(1000, 0, 3 * kHour, kHour), 125);
  EXPECT_DOUBLE_EQ(AccrueUsage(1000, 0, 3 * kHour, 0), 1000);
  EXPECT_DOUBLE_EQ(AccrueUsage(0, 8, 10 * 1000, 0), 80) << "no decay: plain slot-seconds";
  EXPECT_DOUBLE_EQ(AccrueUsage(1000, 8, -5, kHour), 1000) << "a clock stepping back adds nothing";
}

TEST(Usage, AccrualIsIndependentOfTheCallFrequency) {
  double once = AccrueUsage(100, 4, 100 * 1000, kHour);
  double often = 100;
  for (int i = 0; i < 10; ++i) often = AccrueUsage(often, 4, 10 * 1000, kHour);
  EXPECT_NEAR(once, often, 1e-9 * once);
  // Held over a short time the decay barely matters: about slots x seconds.
  EXPECT_NEAR(AccrueUsage(0, 4, 1000, 7 * 24 * kHour), 4.0, 1e-4);
  // Held forever it converges to slots x half-life / ln 2.
  EXPECT_NEAR(AccrueUsage(0, 1, 1000 * kHour, kHour), 3600 / std::log(2.0), 1e-6);
}

TEST(TeamUsage, AccruesWhatEachTeamHeldAndSurvivesARestart) {
  testing::TempStore t;
  {
    TeamUsage usage(t.batch(), t.store(), kHour);
    ASSERT_TRUE(usage.Recover(1000).ok());
    usage.Accrue({{"a", 8}, {"b", 0}}, 1000);  // the first call only starts the clock
    usage.Accrue({{"a", 8}, {"b", 2}}, 1000 + 60 * 1000);
    EXPECT_NEAR(usage.Of("a"), AccrueUsage(0, 8, 60 * 1000, kHour), 1e-9);
    EXPECT_NEAR(usage.Of("b"), AccrueUsage(0, 2, 60 * 1000, kHour), 1e-9);
    EXPECT_EQ(usage.Of("nobody"), 0.0);
    usage.Persist(61 * 1000, /*persist_interval_ms=*/60 * 1000);
    t.Commit();
  }
  t.Reopen();
  TeamUsage usage(t.batch(), t.store(), kHour);
  // Down for one half-life: the stored usage decays over the gap.
  ASSERT_TRUE(usage.Recover(61 * 1000 + kHour).ok());
  EXPECT_NEAR(usage.Of("a"), AccrueUsage(0, 8, 60 * 1000, kHour) / 2, 1e-6);
}

TEST(TeamUsage, PersistsAtMostOncePerIntervalUnlessForced) {
  testing::TempStore t;
  TeamUsage usage(t.batch(), t.store(), kHour);
  ASSERT_TRUE(usage.Recover(0).ok());
  usage.Accrue({{"a", 1}}, 1);
  usage.Accrue({{"a", 1}}, 1000);
  usage.Persist(1000, 60 * 1000);
  EXPECT_TRUE(t.batch()->empty()) << "within the interval nothing is written";
  usage.Persist(1000, 60 * 1000, /*force=*/true);
  EXPECT_EQ(t.batch()->count(), 1u);
  t.Commit();
  usage.Forget("a");
  EXPECT_EQ(usage.Of("a"), 0.0);
  t.Commit();
  TeamUsage reread(t.batch(), t.store(), kHour);
  ASSERT_TRUE(reread.Recover(2000).ok());
  EXPECT_TRUE(reread.all().empty()) << "a forgotten team's row is deleted";
}

TEST(TeamUsage, ACorruptRowIsDataLossNamingIt) {
  testing::TempStore t;
  t.batch()->PutRaw(storage::Table::kUsage, "a", "\xff\xff not a record");
  t.Commit();
  TeamUsage usage(t.batch(), t.store(), kHour);
  Status st = usage.Recover(0);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
}

}  // namespace
}  // namespace anneal::coordinator
