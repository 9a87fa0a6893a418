// The coordinator's /metrics (coordinator/metrics.h): the text format itself (escaping, histogram buckets),
// and the series a Coordinator driven with a FakeClock exports: queue depth and jobs per team, waits from submit
// to first placement, scheduling passes, preemptions by kind, fair-share gauges.
#include "coordinator/metrics.h"

#include <gtest/gtest.h>

#include "common/prometheus_text.h"
#include "harness.h"
#include "metrics_text.h"

namespace anneal::coordinator {
namespace {

using anneal::testing::ParseExposition;
using anneal::testing::SampleValue;
using testing::BaseSpec;
using testing::Harness;

TEST(PrometheusText, LabelValuesAreEscapedAndReadBackUnchanged) {
  EXPECT_EQ(prom::EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  prom::TextWriter out;
  out.Family("anneal_test_jobs", "gauge", "Help with a \\ backslash\nand a newline.");
  out.Sample("anneal_test_jobs", {{"team", "we \"quote\"\\ and\nbreak"}}, 2);
  EXPECT_NE(out.text().find("# HELP anneal_test_jobs Help with a \\\\ backslash\\nand a newline.\n"), std::string::npos)
      << out.text();
  const auto samples = ParseExposition(out.text());
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].labels.at("team"), "we \"quote\"\\ and\nbreak");
  EXPECT_EQ(samples[0].value, 2);
}

TEST(PrometheusText, ValuesParseBackToTheSameDouble) {
  for (double v : {0.1 + 0.2, 2.718281828459045, 1e-4, 3e20, 12.0, -0.5}) {
    EXPECT_EQ(std::stod(prom::FormatValue(v)), v) << prom::FormatValue(v);
  }
  EXPECT_EQ(prom::FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(prom::FormatValue(-INFINITY), "-Inf");
  EXPECT_EQ(prom::FormatValue(NAN), "NaN");
}

TEST(PrometheusText, HistogramBucketsAreCumulativeAndEndWithInfEqualToTheCount) {
  prom::Histogram h({1, 5, 10});
  for (double v : {0.5, 1.0, 3.0, 7.0, 50.0, 60.0}) h.Observe(v);
  prom::TextWriter out;
  out.Family("anneal_test_seconds", "histogram", "Test.");
  h.Write(out, "anneal_test_seconds", {{"team", "a"}});
  const auto samples = ParseExposition(out.text());  // checks monotonic buckets and +Inf == _count
  EXPECT_EQ(SampleValue(samples, "anneal_test_seconds_bucket", {{"le", "1"}}), 2) << "le is inclusive";
  EXPECT_EQ(SampleValue(samples, "anneal_test_seconds_bucket", {{"le", "5"}}), 3);
  EXPECT_EQ(SampleValue(samples, "anneal_test_seconds_bucket", {{"le", "10"}}), 4);
  EXPECT_EQ(SampleValue(samples, "anneal_test_seconds_bucket", {{"le", "+Inf"}}), 6);
  EXPECT_EQ(SampleValue(samples, "anneal_test_seconds_count", {{"team", "a"}}), 6);
  EXPECT_EQ(SampleValue(samples, "anneal_test_seconds_sum", {{"team", "a"}}), 121.5);
}

TEST(PrometheusText, HistogramBoundsMustIncrease) {
  EXPECT_THROW(prom::Histogram({1, 1}), std::invalid_argument);
  EXPECT_THROW(prom::Histogram({2, 1}), std::invalid_argument);
  EXPECT_THROW(prom::Histogram({1, INFINITY}), std::invalid_argument);
  for (const auto& bounds : {WaitSecondsBuckets(), PassSecondsBuckets()}) EXPECT_NO_THROW(prom::Histogram{bounds});
}

CoordinatorOptions SharingOptions() {
  CoordinatorOptions o;
  o.planner.min_runtime_ms = 0;
  o.preemption_grace_ms = 5000;
  o.heartbeat_timeout_ms = 3600 * 1000;  // the tests advance the clock far without heartbeats
  return o;
}

class CoordinatorMetricsTest : public ::testing::Test {
 protected:
  CoordinatorMetricsTest() : h_(SharingOptions()) {}
  void SetUp() override {
    h_.Register("n1", 2);
    for (const char* team : {"a", "b"}) {
      pb::ClientRequest r;
      r.mutable_create_team()->set_name(team);
      ASSERT_EQ(h_.Call(r).error().code(), pb::OK);
    }
  }
  void Guarantee(const std::string& team, uint32_t slots) {
    pb::ClientRequest quota;
    quota.mutable_set_team_quota()->set_team(team);
    quota.mutable_set_team_quota()->set_weight(2.5);
    auto* q = quota.mutable_set_team_quota()->add_quotas();
    q->set_guaranteed(slots);
    q->set_max(slots);
    ASSERT_EQ(h_.Call(quota).error().code(), pb::OK);
  }
  std::string SubmitTo(const std::string& team, const std::string& extra = "") {
    return h_.Submit(BaseSpec("gpus_per_node: 2\n" + extra), team);
  }
  std::string Running(const std::string& team, const std::string& extra = "") {
    const std::string job = SubmitTo(team, extra);
    h_.Round();
    h_.ReportAll(job, pb::TASK_RUNNING);
    EXPECT_EQ(h_.State(job), pb::JOB_RUNNING);
    return job;
  }
  std::vector<anneal::testing::PromSample> Scrape() { return ParseExposition(RenderCoordinatorMetrics(h_.core())); }

  Harness h_;
};

TEST_F(CoordinatorMetricsTest, QueueDepthAndJobsByStateArePerTeam) {
  Running("a");
  SubmitTo("a");
  SubmitTo("b");
  h_.Round();
  const auto m = Scrape();
  EXPECT_EQ(SampleValue(m, "anneal_queue_jobs", {{"team", "a"}}), 1);
  EXPECT_EQ(SampleValue(m, "anneal_queue_jobs", {{"team", "b"}}), 1);
  EXPECT_EQ(SampleValue(m, "anneal_queue_jobs", {{"team", "default"}}), 0) << "every team has a series";
  EXPECT_EQ(SampleValue(m, "anneal_team_jobs", {{"team", "a"}, {"state", "RUNNING"}}), 1);
  EXPECT_EQ(SampleValue(m, "anneal_team_jobs", {{"team", "a"}, {"state", "PENDING"}}), 1);
  EXPECT_EQ(SampleValue(m, "anneal_team_jobs", {{"team", "b"}, {"state", "RUNNING"}}), 0);
  EXPECT_EQ(SampleValue(m, "anneal_queue_length"), 2);
  EXPECT_EQ(SampleValue(m, "anneal_team_slots_held", {{"team", "a"}}), 2);
  EXPECT_GT(SampleValue(m, "anneal_scheduling_pass_seconds_count"), 0) << "every pass is timed";
}

TEST_F(CoordinatorMetricsTest, WaitTimeIsSubmitToFirstPlacementPerTeamCountedOnce) {
  const std::string first = Running("a");
  const std::string second = SubmitTo("a");
  h_.Advance(90 * 1000);
  EXPECT_EQ(h_.State(second), pb::JOB_PENDING);
  h_.ReportAll(first, pb::TASK_SUCCEEDED);
  h_.Round();
  ASSERT_EQ(h_.State(second), pb::JOB_STARTING);
  auto m = Scrape();
  EXPECT_EQ(SampleValue(m, "anneal_job_wait_seconds_count", {{"team", "a"}}), 2);
  EXPECT_EQ(SampleValue(m, "anneal_job_wait_seconds_sum", {{"team", "a"}}), 90);
  EXPECT_EQ(SampleValue(m, "anneal_job_wait_seconds_bucket", {{"team", "a"}, {"le", "60"}}), 1);
  EXPECT_EQ(SampleValue(m, "anneal_job_wait_seconds_bucket", {{"team", "a"}, {"le", "120"}}), 2);
  EXPECT_EQ(SampleValue(m, "anneal_job_wait_seconds_count", {{"team", "b"}}), 0) << "a team without waits has zeros";
  // More passes over the same placed job count nothing more.
  h_.Advance(5000);
  h_.Round();
  EXPECT_EQ(SampleValue(Scrape(), "anneal_job_wait_seconds_count", {{"team", "a"}}), 2);
}

TEST_F(CoordinatorMetricsTest, AJobPlacedBeforeARestartIsNotCountedAgain) {
  Running("a");
  h_.Restart();
  h_.Register("n1", 2);
  h_.Advance(2000);
  h_.Round();
  EXPECT_EQ(SampleValue(Scrape(), "anneal_job_wait_seconds_count", {{"team", "a"}}), 0);
}

TEST_F(CoordinatorMetricsTest, PreemptionsAreCountedByKind) {
  Guarantee("b", 2);
  const std::string victim = Running("a");
  SubmitTo("b");  // b's guarantee reclaims the node
  h_.Round();
  ASSERT_EQ(h_.State(victim), pb::JOB_PREEMPTED);
  h_.Advance(1000);
  h_.Round();  // still PREEMPTED: not counted twice
  auto m = Scrape();
  EXPECT_EQ(SampleValue(m, "anneal_preemptions_total", {{"kind", "reclaim"}}), 1);
  EXPECT_EQ(SampleValue(m, "anneal_preemptions_total", {{"kind", "time_limit"}}), 0);
  EXPECT_EQ(SampleValue(m, "anneal_team_guaranteed_slots", {{"team", "b"}, {"label", ""}}), 2);
  EXPECT_EQ(SampleValue(m, "anneal_team_max_slots", {{"team", "b"}, {"label", ""}}), 2);
  EXPECT_EQ(SampleValue(m, "anneal_team_weight", {{"team", "b"}}), 2.5);
  EXPECT_EQ(SampleValue(m, "anneal_team_weight", {{"team", "a"}}), 1) << "an unset weight reads as 1";
}

TEST_F(CoordinatorMetricsTest, ATimeLimitCountsAsItsOwnKind) {
  const std::string job = Running("a", "time_limit: 10m\n");
  h_.Advance(10 * 60 * 1000 + 1000);
  ASSERT_EQ(h_.State(job), pb::JOB_PREEMPTED);
  auto m = Scrape();
  EXPECT_EQ(SampleValue(m, "anneal_preemptions_total", {{"kind", "time_limit"}}), 1);
  EXPECT_EQ(SampleValue(m, "anneal_preemptions_total", {{"kind", "reclaim"}}), 0);
}

TEST_F(CoordinatorMetricsTest, UsageGrowsWithHeldSlots) {
  Running("a");
  h_.Advance(60 * 1000);
  h_.Round();
  const auto m = Scrape();
  EXPECT_GT(SampleValue(m, "anneal_team_usage_slot_seconds", {{"team", "a"}}), 100) << "2 slots x 60 s, decayed";
  EXPECT_EQ(SampleValue(m, "anneal_team_usage_slot_seconds", {{"team", "b"}}), 0);
}

}  // namespace
}  // namespace anneal::coordinator
