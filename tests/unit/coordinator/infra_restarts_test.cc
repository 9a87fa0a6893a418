// The restart budget for infrastructure faults (coordinator/job_state_machine.h, "Infrastructure restarts"):
// every path that loses a task (Coordinator::LoseTask) charges infra_restarts, not the attempts; a failure with
// every node reachable charges an attempt; past max_infra_restarts the job fails naming the budget.
#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

CoordinatorOptions NoGrace() {
  CoordinatorOptions o;
  o.heartbeat_interval_ms = 100;
  o.heartbeat_timeout_ms = 1000;
  o.reconnect_grace_ms = 0;
  return o;
}

bool HasEvent(Harness& h, const std::string& job, const std::string& text) {
  for (const auto& e : h.Events(job)) {
    if (e.message().find(text) != std::string::npos) return true;
  }
  return false;
}

// n1 runs the job; n2 keeps beating while n1 stays silent past the heartbeat timeout.
void SilenceFirstNode(Harness& h, const std::string& silent, const std::string& beating) {
  for (int i = 0; i < 3; ++i) {
    h.Advance(600);
    h.Heartbeat(beating);
  }
  ASSERT_EQ(h.core().FindNode(silent)->state(), pb::NODE_DOWN);
}

TEST(InfraRestarts, TheSpecsBudgetIsCopiedAtSubmit) {
  Harness h(NoGrace());
  EXPECT_EQ(h.Job(h.Submit(BaseSpec())).max_infra_restarts(), 10u) << "the jobspec default";
  EXPECT_EQ(h.Job(h.Submit(BaseSpec("scheduling:\n  max_infra_restarts: 3\n"))).max_infra_restarts(), 3u);
}

TEST(InfraRestarts, ASilentNodeRestartsTheJobWithoutUsingAnAttempt) {
  Harness h(NoGrace());
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 100);
  h.Register("n2", 1);
  SilenceFirstNode(h, "n1", "n2");
  const pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_STARTING) << "max_attempts 1, yet the lost node costs no attempt";
  EXPECT_EQ(r.infra_restarts(), 1u);
  EXPECT_EQ(r.attempt(), 2u);
  EXPECT_EQ(r.placement().nodes(0).node_id(), "n2");
  EXPECT_EQ(r.resume_checkpoint(), r.output_dir() + "/checkpoint-100");
  EXPECT_TRUE(HasEvent(h, job, "infrastructure restart 1 of 10"));
  // Then a real failure on n2: that one is the job's single attempt.
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportTask("n2", Harness::Task(h.Job(job), pb::TASK_FAILED, 1));
  EXPECT_EQ(h.State(job), pb::JOB_FAILED);
  EXPECT_NE(h.Job(job).result().find("task on node n2 failed"), std::string::npos) << h.Job(job).result();
  EXPECT_EQ(h.Job(job).infra_restarts(), 1u);
}

TEST(InfraRestarts, PastTheBudgetTheJobFailsNamingItAndTheBudgetSurvivesARestart) {
  Harness h(NoGrace());
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 5\nmax_infra_restarts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  std::string on = h.Job(job).placement().nodes(0).node_id();
  std::string other = on == "n1" ? "n2" : "n1";
  SilenceFirstNode(h, on, other);
  ASSERT_EQ(h.Job(job).infra_restarts(), 1u);
  ASSERT_EQ(h.Job(job).placement().nodes(0).node_id(), other);
  h.Restart();  // the count is durable
  h.Register(other, 1);
  EXPECT_EQ(h.Job(job).infra_restarts(), 1u);
  h.ReportAll(job, pb::TASK_RUNNING);
  h.Register(on, 1);
  SilenceFirstNode(h, other, on);
  const pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_FAILED);
  EXPECT_NE(r.result().find("infrastructure restart budget spent (1 of 1, scheduling.max_infra_restarts)"),
            std::string::npos)
      << r.result();
  EXPECT_NE(r.result().find("silent"), std::string::npos) << "the fault itself is named: " << r.result();
  h.Register("n3", 1);  // the daemon still serves
  EXPECT_EQ(h.core().FindNode("n3")->state(), pb::NODE_UP);
}

TEST(InfraRestarts, SurvivorsFailingWhileANodeOfTheGangIsDownIsAnInfrastructureRestart) {
  CoordinatorOptions o = NoGrace();
  o.reconnect_grace_ms = 5000;
  Harness h(o);
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\nmax_attempts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  const pb::JobRecord first = h.Job(job);
  h.Advance(600);
  h.Heartbeat("n2", {Harness::Task(first, pb::TASK_RUNNING)});
  h.Advance(600);  // n1 DOWN, its task kept for the grace
  ASSERT_EQ(h.core().FindNode("n1")->state(), pb::NODE_DOWN);
  h.ReportTask("n2", Harness::Task(first, pb::TASK_FAILED, 1));  // n2's ranks lost their peers
  const pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_PENDING) << "max_attempts 1 would have failed it: " << r.result();
  EXPECT_EQ(r.infra_restarts(), 1u);
  EXPECT_TRUE(HasEvent(h, job, "node n1 is down: its task counts as lost"));
  EXPECT_NE(r.result().find("task on node n2 failed"), std::string::npos)
      << "the lost task does not replace the failure that stopped the gang: " << r.result();
}

TEST(InfraRestarts, AFailureWithEveryNodeReachableUsesAnAttempt) {
  Harness h(NoGrace());
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\nmax_attempts: 2\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  const pb::JobRecord first = h.Job(job);
  h.ReportTask("n1", Harness::Task(first, pb::TASK_FAILED, 1));
  h.ReportTask("n2", Harness::Task(first, pb::TASK_STOPPED));
  const pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.infra_restarts(), 0u);
  EXPECT_EQ(r.attempt(), 2u);
  EXPECT_TRUE(HasEvent(h, job, "retrying (attempt 1 of 2 failed"));
}

TEST(InfraRestarts, ATaskMissingFromHeartbeatsIsAnInfrastructureRestart) {
  Harness h(NoGrace());
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  for (int i = 0; i < 5; ++i) {  // beating, but without the task (the agent restarted without it)
    h.Heartbeat("n1");
    h.Advance(300);
  }
  const pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.infra_restarts(), 1u);
  EXPECT_NE(r.state(), pb::JOB_FAILED) << r.result();
  EXPECT_TRUE(HasEvent(h, job, "no longer reports the job's task"));
}

TEST(InfraRestarts, AReachableNodesUnconfirmedStopIsAStopNotALostNode) {
  CoordinatorOptions o = NoGrace();
  o.heartbeat_timeout_ms = 10000;
  o.stop_timeout_ms = 2000;  // shorter than the heartbeat timeout: the stop deadline comes first
  Harness h(o);
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\nmax_attempts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportTask("n2", Harness::Task(h.Job(job), pb::TASK_FAILED, 1));
  ASSERT_EQ(h.State(job), pb::JOB_RESTARTING);
  h.Advance(2001);  // n1 still UP (silent for less than the heartbeat timeout): slow, not gone
  EXPECT_EQ(h.State(job), pb::JOB_FAILED) << "the attempt failed with every node reachable";
  EXPECT_EQ(h.Job(job).infra_restarts(), 0u);
  EXPECT_TRUE(HasEvent(h, job, "did not confirm the stop within 2000 ms; its slots are released"));
}

}  // namespace
}  // namespace anneal::coordinator
