// Client calls that involve waiting, through the real process: WatchJob long poll and GetLogs fetched from the
// agent that holds the log.
#include <gtest/gtest.h>

#include "sim.h"

namespace anneal::itest {
namespace {

const std::vector<std::string> kFastFlags = {"--heartbeat-interval-ms", "200", "--heartbeat-timeout-ms", "1000"};

pb::ClientReply ReceiveReply(Client& client) {
  auto frames = protocol::Receive(client.socket(), false);
  EXPECT_TRUE(frames.ok()) << frames.status().ToString();
  pb::ClientReply reply;
  if (frames.ok()) {
    EXPECT_TRUE(protocol::Parse(*frames, protocol::MessageKind::kClientReply, &reply).ok());
  }
  return reply;
}

TEST(CoordinatorApi, WatchJobAnswersWhenTheJobMovesNotAtTheTimeout) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  ScriptedAgent agent(ctx, coordinator.endpoint(), "node-a", 1);
  agent.Register();
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  const std::string job = client.Submit(Spec());
  auto launch = agent.WaitForLaunch();
  ASSERT_TRUE(launch.has_value());
  const pb::JobRecord before = client.Job(job);

  pb::ClientRequest watch;
  watch.set_request_id(4242);
  watch.set_token(coordinator.admin_token());
  watch.mutable_watch()->set_job_id(job);
  watch.mutable_watch()->set_after_event_seq(before.next_event_seq() - 1);  // caught up
  watch.mutable_watch()->set_timeout_ms(8000);
  ASSERT_TRUE(protocol::Send(client.socket(), protocol::MessageKind::kClientRequest, watch).ok());
  const auto start = Clock::now();
  agent.Idle(300);  // nothing happens: the long poll stays parked
  agent.ReportTask(*launch, pb::TASK_RUNNING);
  pb::ClientReply reply = ReceiveReply(client);
  EXPECT_LT(MsSince(start), 4000);
  EXPECT_EQ(reply.request_id(), 4242u);
  ASSERT_GE(reply.watch().events_size(), 1);
  EXPECT_EQ(reply.watch().events(0).to_state(), pb::JOB_RUNNING);
  EXPECT_EQ(reply.watch().job().state(), pb::JOB_RUNNING);
}

TEST(CoordinatorApi, GetLogsIsFetchedFromTheAgent) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  ScriptedAgent agent(ctx, coordinator.endpoint(), "node-a", 1);
  agent.Register();
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  const std::string job = client.Submit(Spec());
  ASSERT_TRUE(agent.WaitForLaunch().has_value());

  pb::ClientRequest logs;
  logs.set_request_id(7);
  logs.set_token(coordinator.admin_token());
  logs.mutable_get_logs()->set_job_id(job);
  logs.mutable_get_logs()->set_rank(0);
  logs.mutable_get_logs()->set_offset(0);
  ASSERT_TRUE(protocol::Send(client.socket(), protocol::MessageKind::kClientRequest, logs).ok());
  auto fetch = agent.WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_fetch_logs(); }, 5000);
  ASSERT_TRUE(fetch.has_value());
  EXPECT_EQ(fetch->fetch_logs().job_id(), job);
  pb::AgentToCoordinator chunk;
  chunk.mutable_log_chunk()->set_request_id(fetch->fetch_logs().request_id());
  chunk.mutable_log_chunk()->set_job_id(job);
  chunk.mutable_log_chunk()->set_data("step 1 loss 2.5\n");
  agent.Send(chunk);
  pb::ClientReply reply = ReceiveReply(client);
  EXPECT_EQ(reply.request_id(), 7u);
  EXPECT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  EXPECT_EQ(reply.get_logs().data(), "step 1 loss 2.5\n");
  EXPECT_EQ(reply.get_logs().next_offset(), 16u);

  // The node goes silent: logs of a down node are an error, at once.
  agent.set_beating(false);
  usleep(1500 * 1000);
  pb::ClientRequest again;
  again.mutable_get_logs()->set_job_id(job);
  pb::ClientReply down = client.Call(again);
  EXPECT_EQ(down.error().code(), pb::UNAVAILABLE) << down.error().message();
}

}  // namespace
}  // namespace anneal::itest
