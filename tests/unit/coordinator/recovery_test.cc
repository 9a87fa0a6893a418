// Crash recovery: a Coordinator rebuilt from the store (as after kill -9) has every accepted job in the same
// state, re-adopts running tasks of the current epoch and stops stale ones.
#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

TEST(Recovery, EveryAcceptedJobIsThereInTheSameState) {
  Harness h;
  h.Register("n1", 1);
  const std::string running = h.Submit(BaseSpec());
  const std::string pending = h.Submit(BaseSpec("priority: -1\n"));
  const std::string cancelled = h.Submit(BaseSpec("priority: -2\n"));
  h.Cancel(cancelled);
  h.ReportAll(running, pb::TASK_RUNNING);
  h.Restart();
  EXPECT_EQ(h.State(running), pb::JOB_RUNNING);
  EXPECT_EQ(h.State(pending), pb::JOB_PENDING);
  EXPECT_EQ(h.State(cancelled), pb::JOB_CANCELLED);
  EXPECT_EQ(h.core().ActiveJobCount(), 2u);
  EXPECT_EQ(h.core().PendingJobCount(), 1u);
  // Ids keep counting after a restart.
  const std::string next = h.Submit(BaseSpec());
  EXPECT_GT(next, cancelled);
}

TEST(Recovery, RunningJobIsReAdoptedAndFinishes) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::JobRecord r = h.Job(job);
  h.Restart();
  h.Register("n1", 1, {Harness::Task(r, pb::TASK_RUNNING)});
  EXPECT_TRUE(h.Stops("n1").empty());
  EXPECT_TRUE(h.Launches("n1").empty());
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
  h.ReportAll(job, pb::TASK_SUCCEEDED);
  EXPECT_EQ(h.State(job), pb::JOB_SUCCEEDED);
}

TEST(Recovery, NodesThatDoNotReturnAreDetectedAfterAFullTimeout) {
  CoordinatorOptions o;
  o.heartbeat_timeout_ms = 1000;
  o.heartbeat_interval_ms = 100;
  o.reconnect_grace_ms = 0;  // DOWN means lost here (agents_test covers the reconnect grace)
  Harness h(o);
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.clock().Advance(5000);  // the coordinator was down a while
  h.Restart();
  h.Advance(500);
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);  // grace: a full timeout from the restart
  h.Advance(600);
  EXPECT_EQ(h.State(job), pb::JOB_PENDING);  // lost: an infrastructure restart, waiting for a node
  EXPECT_EQ(h.Job(job).infra_restarts(), 1u);
}

TEST(Recovery, StartupLoadsOnlyActiveJobs) {
  Harness h;
  h.Register("n1", 1);
  for (int i = 0; i < 50; ++i) {
    const std::string job = h.Submit(BaseSpec());
    h.ReportAll(job, pb::TASK_RUNNING);
    h.ReportAll(job, pb::TASK_SUCCEEDED);
  }
  const std::string last = h.Submit(BaseSpec());
  h.Restart();
  EXPECT_EQ(h.core().ActiveJobCount(), 0u + 1u);
  EXPECT_EQ(h.State("job-000001"), pb::JOB_SUCCEEDED);  // still readable from the store
  EXPECT_EQ(h.State(last), pb::JOB_STARTING);
}

}  // namespace
}  // namespace anneal::coordinator
