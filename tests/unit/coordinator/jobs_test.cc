// The job state machine, one test per edge of the diagram in coordinator/job_state_machine.h, driven through
// the Coordinator (coordinator/jobs.cc applies the decisions) with a fake clock and a real store. The pure
// decision table is tested in job_state_machine_test.cc.
#include <gtest/gtest.h>

#include "coordinator/job_state_machine.h"
#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

// The sequence of to_states of the job's state events.
std::vector<pb::JobState> StatePath(Harness& h, const std::string& job) {
  std::vector<pb::JobState> path;
  for (const auto& e : h.Events(job)) {
    if (e.kind() == "state") path.push_back(e.to_state());
  }
  return path;
}

TEST(JobStateMachine, SubmitEntersPendingWithItsEvent) {
  Harness h;
  const std::string job = h.Submit(BaseSpec());
  EXPECT_EQ(h.State(job), pb::JOB_PENDING);
  auto events = h.Events(job);
  ASSERT_GE(events.size(), 1u);  // then a "placement" note: no node yet
  EXPECT_EQ(events[0].seq(), 1u);
  EXPECT_EQ(events[0].kind(), "state");
  EXPECT_EQ(events[0].from_state(), pb::JOB_STATE_UNSPECIFIED);
  EXPECT_EQ(events[0].to_state(), pb::JOB_PENDING);
}

TEST(JobStateMachine, PendingToStartingOnPlacementSendsLaunch) {
  Harness h;
  const std::string job = h.Submit(BaseSpec());
  h.Register("n1", 1);
  pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_STARTING);
  EXPECT_EQ(r.attempt(), 1u);
  EXPECT_GT(r.epoch(), 0u);
  auto launches = h.Launches("n1");
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].job_id(), job);
  EXPECT_EQ(launches[0].epoch(), r.epoch());
  EXPECT_EQ(launches[0].master_addr(), "n1.cluster");
  EXPECT_EQ(launches[0].master_port(), 29500u);
  EXPECT_EQ(launches[0].world_size(), 1u);
  EXPECT_NE(launches[0].trainer_config_yaml().find("/models/tiny"), std::string::npos);
}

TEST(JobStateMachine, StartingToRunningWhenEveryTaskRuns) {
  Harness h;
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\ngpus_per_node: 1\n"));
  pb::JobRecord r = h.Job(job);
  ASSERT_EQ(r.state(), pb::JOB_STARTING);
  h.ReportTask("n1", Harness::Task(r, pb::TASK_RUNNING));
  EXPECT_EQ(h.State(job), pb::JOB_STARTING);  // one of two
  h.ReportTask("n2", Harness::Task(r, pb::TASK_RUNNING));
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
}

TEST(JobStateMachine, RunningToSucceededWhenEveryTaskExitsZero) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportAll(job, pb::TASK_SUCCEEDED);
  EXPECT_EQ(h.State(job), pb::JOB_SUCCEEDED);
  EXPECT_EQ(StatePath(h, job),
            (std::vector<pb::JobState>{pb::JOB_PENDING, pb::JOB_STARTING, pb::JOB_RUNNING, pb::JOB_SUCCEEDED}));
  EXPECT_EQ(h.core().ActiveJobCount(), 0u);
}

TEST(JobStateMachine, StartingToRestartingWhenALaunchFailsThenPendingWithAttemptsLeft) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 2\n"));
  pb::JobRecord first = h.Job(job);
  h.ReportTask("n1", Harness::Task(first, pb::TASK_FAILED, 1));
  // Single-node gang: stopped at once, so RESTARTING -> PENDING -> STARTING (placed again) in one round.
  pb::JobRecord second = h.Job(job);
  EXPECT_EQ(second.state(), pb::JOB_STARTING);
  EXPECT_EQ(second.attempt(), 2u);
  EXPECT_GT(second.epoch(), first.epoch());
  EXPECT_EQ(StatePath(h, job), (std::vector<pb::JobState>{pb::JOB_PENDING, pb::JOB_STARTING, pb::JOB_RESTARTING,
                                                          pb::JOB_PENDING, pb::JOB_STARTING}));
}

TEST(JobStateMachine, RunningToRestartingStopsTheGangAndWaitsForIt) {
  Harness h;
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\nmax_attempts: 3\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::JobRecord r = h.Job(job);
  ASSERT_EQ(r.state(), pb::JOB_RUNNING);
  h.ReportTask("n1", Harness::Task(r, pb::TASK_FAILED, 3));
  EXPECT_EQ(h.State(job), pb::JOB_RESTARTING);
  auto stops = h.Stops("n2");  // the other node of the gang, at once
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].epoch(), r.epoch());
  EXPECT_TRUE(h.Stops("n1").empty());  // its task already ended
  EXPECT_NE(h.Job(job).result().find("exit code 3"), std::string::npos) << h.Job(job).result();
  // RESTARTING -> PENDING (and placed again) only once the gang has stopped.
  h.ReportTask("n2", Harness::Task(r, pb::TASK_STOPPED));
  EXPECT_EQ(h.State(job), pb::JOB_STARTING);
  EXPECT_EQ(h.Job(job).attempt(), 2u);
}

TEST(JobStateMachine, RestartingToFailedWhenNoAttemptsAreLeft) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportAll(job, pb::TASK_FAILED);
  pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_FAILED);
  EXPECT_NE(r.result().find("failed"), std::string::npos) << r.result();
  EXPECT_EQ(StatePath(h, job).back(), pb::JOB_FAILED);
  EXPECT_EQ(StatePath(h, job)[StatePath(h, job).size() - 2], pb::JOB_RESTARTING);
}

TEST(JobStateMachine, PendingCancelPassesCancellingToCancelled) {
  Harness h;
  const std::string job = h.Submit(BaseSpec());
  auto reply = h.Cancel(job);
  EXPECT_EQ(reply.cancel().state(), pb::JOB_CANCELLED);
  EXPECT_EQ(StatePath(h, job), (std::vector<pb::JobState>{pb::JOB_PENDING, pb::JOB_CANCELLING, pb::JOB_CANCELLED}));
  h.Register("n1", 1);
  EXPECT_TRUE(h.Launches("n1").empty());  // never placed
}

TEST(JobStateMachine, StartingCancelStopsTheGang) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  pb::JobRecord r = h.Job(job);
  ASSERT_EQ(r.state(), pb::JOB_STARTING);
  EXPECT_EQ(h.Cancel(job).cancel().state(), pb::JOB_CANCELLING);
  ASSERT_EQ(h.Stops("n1").size(), 1u);
  h.ReportTask("n1", Harness::Task(r, pb::TASK_STOPPED));
  EXPECT_EQ(h.State(job), pb::JOB_CANCELLED);
}

TEST(JobStateMachine, RunningCancelEndsCancelledOnceStopped) {
  Harness h;
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::JobRecord r = h.Job(job);
  EXPECT_EQ(h.Cancel(job).cancel().state(), pb::JOB_CANCELLING);
  EXPECT_EQ(h.Stops("n1").size(), 1u);
  EXPECT_EQ(h.Stops("n2").size(), 1u);
  h.ReportTask("n1", Harness::Task(r, pb::TASK_STOPPED));
  EXPECT_EQ(h.State(job), pb::JOB_CANCELLING);
  h.ReportTask("n2", Harness::Task(r, pb::TASK_STOPPED));
  EXPECT_EQ(h.State(job), pb::JOB_CANCELLED);
  // Cancelling an ended job is a no-op that reports its state.
  EXPECT_EQ(h.Cancel(job).cancel().state(), pb::JOB_CANCELLED);
}

TEST(JobStateMachine, RestartingCancelEndsCancelledNotRetried) {
  Harness h;
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::JobRecord r = h.Job(job);
  h.ReportTask("n1", Harness::Task(r, pb::TASK_FAILED, 1));
  ASSERT_EQ(h.State(job), pb::JOB_RESTARTING);
  EXPECT_EQ(h.Cancel(job).cancel().state(), pb::JOB_CANCELLING);
  h.ReportTask("n2", Harness::Task(r, pb::TASK_STOPPED));
  EXPECT_EQ(h.State(job), pb::JOB_CANCELLED);
  EXPECT_EQ(h.Job(job).attempt(), 1u);
}

TEST(JobStateMachine, ReportsOfAnOlderEpochAreIgnoredAndTheirTaskStopped) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 3\n"));
  pb::JobRecord first = h.Job(job);
  h.ReportTask("n1", Harness::Task(first, pb::TASK_FAILED, 1));
  pb::JobRecord second = h.Job(job);
  ASSERT_GT(second.epoch(), first.epoch());
  // A late RUNNING of the first epoch: ignored (still STARTING), and that task is told to stop.
  h.ReportTask("n1", Harness::Task(first, pb::TASK_RUNNING));
  EXPECT_EQ(h.State(job), pb::JOB_STARTING);
  auto stops = h.Stops("n1");
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].epoch(), first.epoch());
  // The current epoch's report moves the job.
  h.ReportTask("n1", Harness::Task(second, pb::TASK_RUNNING));
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
}

TEST(JobStateMachine, EveryTransitionIsDurableWithItsEvent) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  h.ReportAll(job, pb::TASK_RUNNING);
  h.Restart();  // kill -9: only what Flush committed survives
  pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_RUNNING);
  auto events = h.Events(job);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().to_state(), pb::JOB_RUNNING);
  EXPECT_EQ(r.next_event_seq(), events.back().seq() + 1);
}

}  // namespace
}  // namespace anneal::coordinator
