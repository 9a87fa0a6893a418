// The agent channel: registration, heartbeats and failure detection, sequenced reports, re-adoption.
#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

CoordinatorOptions ShortTimeouts() {
  CoordinatorOptions o;
  o.heartbeat_interval_ms = 100;
  o.heartbeat_timeout_ms = 1000;
  o.reconnect_grace_ms = 0;  // a silent node's tasks are lost at once (the grace has its own tests below)
  return o;
}

CoordinatorOptions WithReconnectGrace() {
  CoordinatorOptions o = ShortTimeouts();
  o.reconnect_grace_ms = 5000;
  return o;
}

bool HasEvent(Harness& h, const std::string& job, const std::string& text) {
  for (const auto& e : h.Events(job)) {
    if (e.message().find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(ReconnectGrace, ADownNodesRunningTaskIsKeptAndReadoptedWhenTheNodeReturns) {
  Harness h(WithReconnectGrace());
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 3\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  const pb::JobRecord before = h.Job(job);
  h.Advance(1001);  // n1 silent past the heartbeat timeout
  ASSERT_EQ(h.core().FindNode("n1")->state(), pb::NODE_DOWN);
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING) << "a partition must not stop a job that trains without us";
  EXPECT_TRUE(HasEvent(h, job, "kept for up to 5000 ms"));
  h.Advance(3000);  // still within the grace
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
  h.Register("n1", 1, {Harness::Task(before, pb::TASK_RUNNING)});
  EXPECT_EQ(h.core().FindNode("n1")->state(), pb::NODE_UP);
  const pb::JobRecord after = h.Job(job);
  EXPECT_EQ(after.state(), pb::JOB_RUNNING);
  EXPECT_EQ(after.attempt(), before.attempt());
  EXPECT_EQ(after.epoch(), before.epoch());
  EXPECT_TRUE(h.Stops("n1").empty()) << "the re-adopted task is not stopped";
  EXPECT_TRUE(HasEvent(h, job, "re-adopted"));
  h.Advance(5000);  // the grace would have ended: nothing happens, the task is no longer kept
  h.Heartbeat("n1", {Harness::Task(before, pb::TASK_RUNNING)});
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
}

TEST(ReconnectGrace, WhenTheGraceEndsTheTaskIsLostAndTheJobRestartsElsewhere) {
  Harness h(WithReconnectGrace());
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 3\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 100);
  h.Register("n2", 1);
  for (int i = 0; i < 12; ++i) {  // n2 beats, n1 stays silent: DOWN after 1.2 s, lost 5 s later
    h.Advance(600);
    h.Heartbeat("n2");
  }
  const pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_STARTING);
  EXPECT_EQ(r.attempt(), 2u);
  EXPECT_EQ(r.placement().nodes(0).node_id(), "n2");
  EXPECT_EQ(r.resume_checkpoint(), r.output_dir() + "/checkpoint-100");
  EXPECT_TRUE(HasEvent(h, job, "did not reconnect within 5000 ms"));
}

TEST(ReconnectGrace, AFailureElsewhereInTheGangEndsTheGraceAtOnce) {
  Harness h(WithReconnectGrace());
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\nmax_attempts: 3\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  const pb::JobRecord first = h.Job(job);
  h.Advance(600);
  h.Heartbeat("n2", {Harness::Task(first, pb::TASK_RUNNING)});
  h.Advance(600);  // n1 DOWN, its task kept
  ASSERT_EQ(h.core().FindNode("n1")->state(), pb::NODE_DOWN);
  ASSERT_EQ(h.State(job), pb::JOB_RUNNING);
  h.ReportTask("n2", Harness::Task(first, pb::TASK_FAILED, 1));  // n2's ranks lost their peers
  const pb::JobRecord r = h.Job(job);
  EXPECT_NE(r.state(), pb::JOB_RUNNING);
  EXPECT_NE(r.state(), pb::JOB_RESTARTING) << "no stop timeout is waited for the DOWN node's task";
  EXPECT_TRUE(HasEvent(h, job, "node n1 is down: its task counts as lost"));
}

TEST(NodeRegistry, RegisterRepliesWithSessionIntervalAndLastAckedSeq) {
  Harness h(ShortTimeouts());
  h.Register("n1", 4);
  auto msgs = h.AgentMessages("n1");
  ASSERT_EQ(msgs.size(), 1u);
  ASSERT_TRUE(msgs[0].has_register_reply());
  EXPECT_TRUE(msgs[0].register_reply().accepted());
  EXPECT_EQ(msgs[0].register_reply().heartbeat_interval_ms(), 100u);
  EXPECT_EQ(msgs[0].register_reply().session(), 1u);
  EXPECT_EQ(msgs[0].register_reply().last_acked_seq(), 0u);
  ASSERT_NE(h.core().FindNode("n1"), nullptr);
  EXPECT_EQ(h.core().FindNode("n1")->state(), pb::NODE_UP);
}

TEST(NodeRegistry, BadRegistrationIsRefusedWithAnError) {
  Harness h;
  h.Register("n1", 0);
  auto msgs = h.AgentMessages("n1");
  ASSERT_EQ(msgs.size(), 1u);
  ASSERT_TRUE(msgs[0].has_register_reply());
  EXPECT_FALSE(msgs[0].register_reply().accepted());
  EXPECT_EQ(msgs[0].register_reply().error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(msgs[0].register_reply().error().message().find("0 slots"), std::string::npos);
  EXPECT_EQ(h.core().FindNode("n1"), nullptr);
}

TEST(NodeRegistry, SilentNodeIsDownAndItsJobRestartsFromTheLastCheckpointElsewhere) {
  Harness h(ShortTimeouts());
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 3\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 100);
  h.ReportCheckpoint("n1", job, 200);
  h.Register("n2", 1);
  h.Heartbeat("n2");
  h.Advance(600);
  h.Heartbeat("n2");  // n2 keeps beating, n1 is silent
  h.Advance(600);
  EXPECT_EQ(h.core().FindNode("n1")->state(), pb::NODE_DOWN);
  EXPECT_EQ(h.core().FindNode("n2")->state(), pb::NODE_UP);
  pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_STARTING);
  EXPECT_EQ(r.attempt(), 2u);
  EXPECT_EQ(r.placement().nodes(0).node_id(), "n2");
  EXPECT_EQ(r.resume_checkpoint(), h.Job(job).output_dir() + "/checkpoint-200");
  auto launches = h.Launches("n2");
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].resume_checkpoint(), h.Job(job).output_dir() + "/checkpoint-200");
}

TEST(NodeRegistry, SilentNodeFailsTheJobWhenTheInfrastructureRestartsRunOut) {
  Harness h(ShortTimeouts());
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 1\nmax_infra_restarts: 0\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.Advance(1001);
  pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_FAILED);
  EXPECT_NE(r.result().find("silent"), std::string::npos) << r.result();
  EXPECT_NE(r.result().find("scheduling.max_infra_restarts"), std::string::npos) << r.result();
}

TEST(NodeRegistry, ReturningNodeIsToldToStopTasksOfAnOldEpoch) {
  Harness h(ShortTimeouts());
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 3\n"));
  pb::JobRecord first = h.Job(job);
  const std::string lost_node = first.placement().nodes(0).node_id();
  const std::string other = lost_node == "n1" ? "n2" : "n1";
  h.ReportAll(job, pb::TASK_RUNNING);
  h.clock().Advance(600);
  h.Heartbeat(other, {Harness::Task(first, pb::TASK_RUNNING)});
  h.Advance(600);
  ASSERT_EQ(h.core().FindNode(lost_node)->state(), pb::NODE_DOWN);
  pb::JobRecord second = h.Job(job);
  ASSERT_EQ(second.placement().nodes(0).node_id(), other);
  // The lost node comes back, still running the first epoch's task.
  h.Register(lost_node, 1, {Harness::Task(first, pb::TASK_RUNNING)});
  auto stops = h.Stops(lost_node);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].job_id(), job);
  EXPECT_EQ(stops[0].epoch(), first.epoch());
  EXPECT_EQ(h.Job(job).epoch(), second.epoch());
}

TEST(NodeRegistry, HeartbeatOfAnUnregisteredPeerAsksToRegister) {
  Harness h;
  h.Heartbeat("ghost");
  h.Round();
  auto msgs = h.AgentMessages("ghost");
  ASSERT_EQ(msgs.size(), 1u);
  ASSERT_TRUE(msgs[0].has_error());
  EXPECT_EQ(msgs[0].error().code(), pb::FAILED_PRECONDITION);
  EXPECT_NE(msgs[0].error().message().find("register again"), std::string::npos);
}

TEST(NodeRegistry, TaskMissingFromHeartbeatsPastTheTimeoutIsLost) {
  Harness h(ShortTimeouts());
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 1\nmax_infra_restarts: 0\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::JobRecord r = h.Job(job);
  for (int i = 0; i < 5; ++i) {  // listed: fine
    h.Heartbeat("n1", {Harness::Task(r, pb::TASK_RUNNING)});
    h.Advance(300);
  }
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
  for (int i = 0; i < 4; ++i) {  // beating but no longer listing the task
    h.Heartbeat("n1");
    h.Advance(300);
  }
  EXPECT_EQ(h.State(job), pb::JOB_FAILED);
  EXPECT_NE(h.Job(job).result().find("no longer reports"), std::string::npos) << h.Job(job).result();
}

TEST(Reports, DuplicateSeqIsAckedButAppliedOnce) {
  Harness h;
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("nodes: 2\n"));
  pb::JobRecord r = h.Job(job);
  const uint64_t seq = h.ReportTask("n1", Harness::Task(r, pb::TASK_RUNNING));
  EXPECT_EQ(h.Acks("n1"), std::vector<uint64_t>{seq});
  // The same seq again carrying something else: acked, not applied.
  h.ReportTask("n1", Harness::Task(r, pb::TASK_FAILED, 9), seq);
  EXPECT_EQ(h.Acks("n1"), std::vector<uint64_t>{seq});
  EXPECT_EQ(h.State(job), pb::JOB_STARTING);
  EXPECT_EQ(h.Job(job).task_states().at("n1"), pb::TASK_RUNNING);
}

TEST(Reports, AppliedSeqSurvivesARestartAndIsToldAtRegister) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  pb::JobRecord r = h.Job(job);
  const uint64_t seq = h.ReportTask("n1", Harness::Task(r, pb::TASK_RUNNING));
  h.Restart();
  h.Register("n1", 1, {Harness::Task(r, pb::TASK_RUNNING)});
  auto msgs = h.AgentMessages("n1");
  ASSERT_FALSE(msgs.empty());
  ASSERT_TRUE(msgs[0].has_register_reply());
  EXPECT_EQ(msgs[0].register_reply().last_acked_seq(), seq);
  // A resend of an already applied report is a duplicate.
  h.ReportTask("n1", Harness::Task(r, pb::TASK_FAILED, 1), seq);
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
}

TEST(Reports, ReportFromAnUnregisteredPeerIsRefusedNotAcked) {
  Harness h;
  pb::TaskStatus t;
  t.set_job_id("job-000001");
  h.ReportTask("stranger", t, 5);
  auto msgs = h.AgentMessages("stranger");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_TRUE(msgs[0].has_error());
}

TEST(Reports, AnyTaskFailureStopsEveryOtherNodeOfTheGangAtOnce) {
  Harness h;
  for (const char* n : {"n1", "n2", "n3"}) h.Register(n, 1);
  const std::string job = h.Submit(BaseSpec("nodes: 3\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::JobRecord r = h.Job(job);
  h.ReportTask("n2", Harness::Task(r, pb::TASK_FAILED, 1));
  EXPECT_EQ(h.Stops("n1").size(), 1u);
  EXPECT_EQ(h.Stops("n3").size(), 1u);
  EXPECT_TRUE(h.Stops("n2").empty());
}

TEST(Reports, LaunchIsResentWhenTheAgentReRegistersWithoutTheTask) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  ASSERT_EQ(h.Launches("n1").size(), 1u);
  h.Register("n1", 1);  // reconnect before the launch arrived
  auto launches = h.Launches("n1");
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].epoch(), h.Job(job).epoch());
}

TEST(Reports, UnconfirmedStopIsGivenUpAfterTheStopTimeout) {
  CoordinatorOptions o;
  o.stop_timeout_ms = 5000;
  Harness h(o);
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  h.ReportAll(job, pb::TASK_RUNNING);
  h.Cancel(job);
  EXPECT_EQ(h.State(job), pb::JOB_CANCELLING);
  h.Heartbeat("n1", {Harness::Task(h.Job(job), pb::TASK_RUNNING)});
  h.Advance(5001);
  h.Round();
  EXPECT_EQ(h.State(job), pb::JOB_CANCELLED);
}

}  // namespace
}  // namespace anneal::coordinator
