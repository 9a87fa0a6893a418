// Failure handling through the real process: a silent agent's job restarts from its last checkpoint on another
// node; duplicate and stale-epoch reports are ignored; a gang failure stops the other nodes.
#include <gtest/gtest.h>

#include "sim.h"

namespace anneal::itest {
namespace {

// A silent node is dead here: its tasks are lost at once (the reconnect grace is tested in agents_test and
// tests/fault's partition case).
const std::vector<std::string> kFastFlags = {"--heartbeat-interval-ms", "200", "--heartbeat-timeout-ms", "1000",
                                             "--reconnect-grace-ms",    "0"};

TEST(CoordinatorFailures, SilentAgentJobRestartsFromLastCheckpointOnAnotherNode) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  ScriptedAgent a(ctx, coordinator.endpoint(), "node-a", 1);
  a.Register();
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  const std::string job = client.Submit(Spec("max_attempts: 3\n"));
  auto launch = a.WaitForLaunch();
  ASSERT_TRUE(launch.has_value());
  a.ReportTask(*launch, pb::TASK_RUNNING);
  a.ReportCheckpoint(*launch, 50);
  a.ReportCheckpoint(*launch, 100);
  ScriptedAgent b(ctx, coordinator.endpoint(), "node-b", 1);
  b.Register();
  a.set_beating(false);  // node-a goes silent
  const auto start = Clock::now();
  auto relaunch = b.WaitForLaunch(5000);  // b heartbeats while it waits
  ASSERT_TRUE(relaunch.has_value()) << "no relaunch on node-b";
  EXPECT_GE(MsSince(start), 700);  // only after the timeout
  EXPECT_EQ(relaunch->job_id(), job);
  EXPECT_EQ(relaunch->attempt(), 2u);
  EXPECT_GT(relaunch->epoch(), launch->epoch());
  EXPECT_EQ(relaunch->resume_checkpoint(), launch->output_dir() + "/checkpoint-100");
  pb::ClientRequest nodes;
  nodes.mutable_list_nodes();
  const pb::ClientReply listed = client.Call(nodes);  // named: the loop must not outlive it
  for (const auto& n : listed.list_nodes().nodes()) {
    EXPECT_EQ(n.state(), n.node_id() == "node-a" ? pb::NODE_DOWN : pb::NODE_UP);
  }
  // node-a comes back still running epoch 1: it is told to stop it.
  a.set_beating(true);
  a.Register();
  auto stop = a.WaitForStop();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->epoch(), launch->epoch());
  b.ReportTask(*relaunch, pb::TASK_RUNNING);
  b.ReportTask(*relaunch, pb::TASK_SUCCEEDED);
  EXPECT_EQ(client.Job(job).state(), pb::JOB_SUCCEEDED);
}

TEST(CoordinatorFailures, DuplicateAndStaleEpochReportsAreIgnored) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  ScriptedAgent a(ctx, coordinator.endpoint(), "node-a", 1);
  a.Register();
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  const std::string job = client.Submit(Spec("max_attempts: 3\n"));
  auto first = a.WaitForLaunch();
  ASSERT_TRUE(first.has_value());
  const uint64_t running_seq = a.ReportTask(*first, pb::TASK_RUNNING);
  // Duplicate: the same seq again, now claiming failure. Acked (ReportTask waits for it), not applied.
  a.ReportTask(*first, pb::TASK_FAILED, running_seq, 1);
  EXPECT_EQ(client.Job(job).state(), pb::JOB_RUNNING);
  EXPECT_EQ(client.Job(job).attempt(), 1u);
  // A real failure: attempt 2 with a new epoch.
  a.ReportTask(*first, pb::TASK_FAILED, 0, 1);
  auto second = a.WaitForLaunch();
  ASSERT_TRUE(second.has_value());
  EXPECT_GT(second->epoch(), first->epoch());
  // A stale report of epoch 1 (new seq): ignored, and its task told to stop.
  a.inbox().clear();
  a.ReportTask(*first, pb::TASK_RUNNING);
  auto stop = a.WaitForStop();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->epoch(), first->epoch());
  pb::JobRecord job_now = client.Job(job);
  EXPECT_EQ(job_now.state(), pb::JOB_STARTING);
  EXPECT_EQ(job_now.epoch(), second->epoch());
  a.ReportTask(*second, pb::TASK_RUNNING);
  EXPECT_EQ(client.Job(job).state(), pb::JOB_RUNNING);
}

TEST(CoordinatorFailures, GangFailureStopsEveryOtherNode) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  ScriptedAgent a(ctx, coordinator.endpoint(), "node-a", 1);
  ScriptedAgent b(ctx, coordinator.endpoint(), "node-b", 1);
  a.Register();
  b.Register();
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  const std::string job = client.Submit(Spec("nodes: 2\nmax_attempts: 1\n"));
  auto la = a.WaitForLaunch();
  auto lb = b.WaitForLaunch();
  ASSERT_TRUE(la && lb);
  EXPECT_EQ(la->nnodes(), 2u);
  EXPECT_NE(la->node_rank(), lb->node_rank());
  a.ReportTask(*la, pb::TASK_RUNNING);
  b.ReportTask(*lb, pb::TASK_RUNNING);
  a.ReportTask(*la, pb::TASK_FAILED, 0, 137);
  auto stop = b.WaitForStop();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->job_id(), job);
  EXPECT_EQ(client.Job(job).state(), pb::JOB_RESTARTING);
  b.ReportTask(*lb, pb::TASK_STOPPED);
  pb::JobRecord failed = client.Job(job);
  EXPECT_EQ(failed.state(), pb::JOB_FAILED);
  EXPECT_NE(failed.result().find("exit code 137"), std::string::npos) << failed.result();
}

}  // namespace
}  // namespace anneal::itest
