// The attacks of issue 14 on the agent channel, against the real anneal-coordinator process from a
// hand-written ZeroMQ DEALER: each is refused with a clear error, nothing changes, the coordinator serves on.
#include <gtest/gtest.h>

#include <limits>

#include "sim.h"

namespace anneal::itest {
namespace {

const std::vector<std::string> kFastFlags = {"--heartbeat-interval-ms", "200", "--heartbeat-timeout-ms", "3000"};

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

pb::AgentToCoordinator RegisterMessage(const std::string& node, uint32_t slots) {
  pb::AgentToCoordinator msg;
  msg.mutable_register_()->set_node_id(node);
  msg.mutable_register_()->mutable_inventory()->set_slots(slots);
  msg.mutable_register_()->mutable_inventory()->set_address("127.0.0.1");
  return msg;
}

pb::RegisterReply SendRegister(ScriptedAgent& raw, const pb::AgentToCoordinator& msg) {
  raw.Send(msg);
  auto reply = raw.WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_register_reply(); }, 5000);
  EXPECT_TRUE(reply.has_value()) << "no RegisterReply";
  return reply ? reply->register_reply() : pb::RegisterReply();
}

std::vector<std::string> NodeIds(Client& client) {
  pb::ClientRequest req;
  req.mutable_list_nodes();
  const pb::ClientReply reply = client.Call(req);
  EXPECT_EQ(reply.error().code(), pb::OK);
  std::vector<std::string> out;
  for (const auto& n : reply.list_nodes().nodes()) out.push_back(n.node_id());
  return out;
}

TEST(CoordinatorIdentity, RegistrationWithoutCredentialIsRefusedAndUnderAnExistingIdToo) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  ScriptedAgent attacker(ctx, coordinator.endpoint(), "intruder", 1);
  attacker.set_beating(false);
  pb::RegisterReply refused = SendRegister(attacker, RegisterMessage("intruder", 4));
  EXPECT_FALSE(refused.accepted());
  EXPECT_EQ(refused.error().code(), pb::UNAUTHENTICATED);
  EXPECT_TRUE(Contains(refused.error().message(), "node 'intruder'")) << refused.error().message();
  EXPECT_TRUE(NodeIds(client).empty());

  ScriptedAgent real(ctx, coordinator.endpoint(), "node-a", 1);
  ASSERT_TRUE(real.Register().accepted());
  // The attacker knows a valid join token, and still cannot take node-a's id.
  pb::AgentToCoordinator takeover = RegisterMessage("node-a", 8);
  takeover.mutable_register_()->set_join_token(coordinator.join_token());
  refused = SendRegister(attacker, takeover);
  EXPECT_EQ(refused.error().code(), pb::PERMISSION_DENIED);
  EXPECT_TRUE(Contains(refused.error().message(), "node 'node-a'")) << refused.error().message();
  // node-a keeps its routing: the launch (with the resolved spec) reaches the real agent only.
  const std::string job = client.Submit(Spec());
  auto launch = real.WaitForLaunch();
  ASSERT_TRUE(launch.has_value());
  EXPECT_EQ(launch->job_id(), job);
  attacker.Idle(300);
  for (const auto& m : attacker.inbox()) EXPECT_FALSE(m.has_launch()) << "the attacker got a launch";
}

TEST(CoordinatorIdentity, ForgedCheckpointForAnotherNodesJobChangesNothing) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  ScriptedAgent victim(ctx, coordinator.endpoint(), "node-a", 1);
  ASSERT_TRUE(victim.Register().accepted());
  const std::string job = client.Submit(Spec("save_total_limit: 1\nmax_attempts: 2\n"));
  auto launch = victim.WaitForLaunch();
  ASSERT_TRUE(launch.has_value());
  victim.ReportTask(*launch, pb::TASK_RUNNING);
  victim.ReportCheckpoint(*launch, 10);
  ScriptedAgent forger(ctx, coordinator.endpoint(), "node-b", 1);  // a registered node, not the job's
  ASSERT_TRUE(forger.Register().accepted());
  pb::AgentToCoordinator forged;
  forged.mutable_checkpoint_committed()->set_seq(1);
  auto* c = forged.mutable_checkpoint_committed()->mutable_checkpoint();
  c->set_job_id(job);
  c->set_step(20);
  c->set_epoch(launch->epoch());
  c->set_path("/tmp/forger-chosen");
  forger.Send(forged);
  ASSERT_TRUE(forger.WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_ack(); }, 5000).has_value())
      << "the forged report is acknowledged (applied to nothing), so a stream never wedges";
  victim.Idle(500);
  for (const auto& m : victim.inbox()) EXPECT_FALSE(m.has_delete_checkpoint()) << "retention ordered a delete";
  pb::ClientRequest list;
  list.mutable_list_checkpoints()->set_job_id(job);
  const pb::ClientReply listed = client.Call(list);
  ASSERT_EQ(listed.list_checkpoints().checkpoints_size(), 1);
  EXPECT_EQ(listed.list_checkpoints().checkpoints(0).step(), 10u);
  victim.ReportTask(*launch, pb::TASK_FAILED, 0, 1);
  const pb::JobRecord r = client.Job(job);
  EXPECT_EQ(r.attempt(), 2u);
  EXPECT_EQ(r.resume_checkpoint(), launch->output_dir() + "/checkpoint-10");
}

TEST(CoordinatorIdentity, HugeSlotCountsAreRefusedAndSubmitWorksAfterARestart) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  {
    ScriptedAgent attacker(ctx, coordinator.endpoint(), "big", 1);
    attacker.set_beating(false);
    for (uint32_t slots : {4294967295u, 2147483648u}) {
      pb::AgentToCoordinator msg = RegisterMessage("big", slots);
      msg.mutable_register_()->set_join_token(coordinator.join_token());
      pb::RegisterReply refused = SendRegister(attacker, msg);
      EXPECT_EQ(refused.error().code(), pb::INVALID_ARGUMENT);
      EXPECT_TRUE(Contains(refused.error().message(), std::to_string(slots))) << refused.error().message();
      EXPECT_TRUE(Contains(refused.error().message(), "max_slots_per_node")) << refused.error().message();
    }
    ScriptedAgent real(ctx, coordinator.endpoint(), "node-a", 2);
    ASSERT_TRUE(real.Register().accepted());
    Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
    client.Submit(Spec());
    EXPECT_EQ(NodeIds(client), std::vector<std::string>{"node-a"});
  }
  const std::string endpoint = coordinator.endpoint();
  coordinator.Kill(SIGKILL);
  coordinator.Start(endpoint);
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  client.Submit(Spec());  // before bounds: "the cluster has -2147483640 in total", even after a restart
}

TEST(CoordinatorIdentity, SeqFarAheadIsRefusedAndTheAgentsLaterReportsStillApply) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  ScriptedAgent agent(ctx, coordinator.endpoint(), "node-a", 1);
  ASSERT_TRUE(agent.Register().accepted());
  const std::string job = client.Submit(Spec());
  auto launch = agent.WaitForLaunch();
  ASSERT_TRUE(launch.has_value());
  pb::AgentToCoordinator huge;
  huge.mutable_task_update()->set_seq(std::numeric_limits<uint64_t>::max());
  huge.mutable_task_update()->mutable_status()->set_job_id(job);
  huge.mutable_task_update()->mutable_status()->set_epoch(launch->epoch());
  huge.mutable_task_update()->mutable_status()->set_state(pb::TASK_FAILED);
  agent.Send(huge);
  auto error = agent.WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_error(); }, 5000);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error().code(), pb::INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(error->error().message(), "18446744073709551615")) << error->error().message();
  EXPECT_EQ(client.Job(job).state(), pb::JOB_STARTING) << "not applied";
  agent.ReportTask(*launch, pb::TASK_RUNNING);  // seq 1: acknowledged and applied
  client.WaitForState(job, pb::JOB_RUNNING);
}

}  // namespace
}  // namespace anneal::itest
