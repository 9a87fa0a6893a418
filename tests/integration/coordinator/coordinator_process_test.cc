// The anneal-coordinator process end to end: flags, submit -> place -> run -> succeed, kill -9 and restart
// mid-job, garbage and wrong-version frames, SIGTERM.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include <sys/stat.h>

#include "sim.h"

namespace anneal::itest {
namespace {

const std::vector<std::string> kFastFlags = {"--heartbeat-interval-ms", "200", "--heartbeat-timeout-ms", "1000"};

TEST(CoordinatorProcess, HelpAndVersion) {
  FILE* help = popen(ANNEAL_COORDINATOR_BIN " --help", "r");
  ASSERT_NE(help, nullptr);
  std::string text;
  char buf[256];
  while (fgets(buf, sizeof buf, help)) text += buf;
  EXPECT_EQ(pclose(help), 0);
  EXPECT_NE(text.find("--state-dir"), std::string::npos);
  EXPECT_NE(text.find("--heartbeat-timeout-ms"), std::string::npos);
  FILE* version = popen(ANNEAL_COORDINATOR_BIN " --version", "r");
  ASSERT_NE(version, nullptr);
  text.clear();
  while (fgets(buf, sizeof buf, version)) text += buf;
  EXPECT_EQ(pclose(version), 0);
  EXPECT_FALSE(text.empty());
}

TEST(CoordinatorProcess, SubmitPlaceRunSucceed) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  ScriptedAgent agent(ctx, coordinator.endpoint(), "node-a", 2);
  agent.Register();
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  const std::string job = client.Submit(Spec("gpus_per_node: 2\n"));
  auto launch = agent.WaitForLaunch();
  ASSERT_TRUE(launch.has_value());
  EXPECT_EQ(launch->job_id(), job);
  EXPECT_EQ(launch->ranks_size(), 2);
  EXPECT_EQ(launch->master_addr(), "127.0.0.1");
  EXPECT_GE(launch->master_port(), 29500u);
  EXPECT_EQ(client.Job(job).state(), pb::JOB_STARTING);
  agent.ReportTask(*launch, pb::TASK_RUNNING);
  EXPECT_EQ(client.Job(job).state(), pb::JOB_RUNNING);
  agent.ReportTask(*launch, pb::TASK_SUCCEEDED);
  pb::JobRecord done = client.Job(job);
  EXPECT_EQ(done.state(), pb::JOB_SUCCEEDED);
  EXPECT_EQ(done.attempt(), 1u);

  // Watch sees the whole story.
  pb::ClientRequest watch;
  watch.mutable_watch()->set_job_id(job);
  watch.mutable_watch()->set_timeout_ms(1000);
  auto reply = client.Call(watch);
  ASSERT_GE(reply.watch().events_size(), 4);
  EXPECT_EQ(reply.watch().events(reply.watch().events_size() - 1).to_state(), pb::JOB_SUCCEEDED);
}

TEST(CoordinatorProcess, WrongTokenIsRefused) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  Client client(ctx, coordinator.endpoint(), "wrong");
  pb::ClientRequest req;
  req.mutable_list_jobs();
  EXPECT_EQ(client.Call(req).error().code(), pb::UNAUTHENTICATED);
  Client none(ctx, coordinator.endpoint(), "");
  EXPECT_EQ(none.Call(req).error().code(), pb::UNAUTHENTICATED);
}

TEST(CoordinatorProcess, BootstrapWritesTheAdminCredentialOnlyToAPrivateClientConfigOnce) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  struct stat st {};
  ASSERT_EQ(stat(coordinator.client_config().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto config = ReadClientConfigFile(coordinator.client_config());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->coordinator, coordinator.endpoint());
  const std::string token = config->token;
  ASSERT_EQ(token.rfind("ant_", 0), 0u) << token;
  // The state directory holds no copy of the secret.
  const std::string secret = token.substr(token.rfind('_') + 1);
  const std::string grep = "grep -rqa " + secret + " " + dir.str() + " --exclude=*-client.yaml";
  EXPECT_NE(std::system(grep.c_str()), 0) << "the token's secret is stored under " << dir.str();
  zmq::context_t ctx;
  Client client(ctx, coordinator.endpoint(), token);
  pb::ClientRequest whoami;
  whoami.mutable_whoami();
  pb::ClientReply me = client.Call(whoami);
  ASSERT_EQ(me.error().code(), pb::OK) << me.error().message();
  EXPECT_EQ(me.whoami().user().name(), "admin");
  EXPECT_TRUE(me.whoami().user().cluster_admin());
  // A restart on the same state does not bootstrap again: the file and the token stay as they are.
  const std::string endpoint = coordinator.endpoint();
  coordinator.Kill(SIGTERM);
  std::filesystem::remove(coordinator.client_config());
  coordinator.Start(endpoint);
  EXPECT_FALSE(std::filesystem::exists(coordinator.client_config()));
  Client again(ctx, endpoint, token);
  EXPECT_EQ(again.Call(whoami).error().code(), pb::OK);
}

TEST(CoordinatorProcess, KillNineAndRestartMidJobKeepsTheJobRunning) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  const std::string endpoint = coordinator.endpoint();
  zmq::context_t ctx;
  ScriptedAgent agent(ctx, endpoint, "node-a", 1);
  agent.Register();
  std::string job, queued;
  {
    Client client(ctx, endpoint, coordinator.admin_token());
    job = client.Submit(Spec());
    queued = client.Submit(Spec());  // waits behind the first: accepted, so it must survive too
  }
  auto launch = agent.WaitForLaunch();
  ASSERT_TRUE(launch.has_value());
  agent.ReportTask(*launch, pb::TASK_RUNNING);

  coordinator.Kill(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(coordinator.last_status()));
  coordinator.Start(endpoint);  // same state dir, same port

  // The agent's DEALER reconnects by itself; its heartbeat is refused (unknown peer), so it registers again
  // with its running task, which is re-adopted (no stop, no new launch).
  agent.Heartbeat();
  auto refused = agent.WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_error(); }, 5000);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->error().code(), pb::FAILED_PRECONDITION);
  agent.Register();
  Client client(ctx, endpoint, coordinator.admin_token());
  EXPECT_EQ(client.Job(job).state(), pb::JOB_RUNNING);
  EXPECT_EQ(client.Job(job).epoch(), launch->epoch());
  EXPECT_EQ(client.Job(queued).state(), pb::JOB_PENDING);
  agent.Idle(300);
  for (const auto& m : agent.inbox()) {
    EXPECT_FALSE(m.has_stop()) << m.ShortDebugString();
    EXPECT_FALSE(m.has_launch()) << m.ShortDebugString();
  }
  agent.ReportTask(*launch, pb::TASK_SUCCEEDED);
  EXPECT_EQ(client.Job(job).state(), pb::JOB_SUCCEEDED);
  // The slot is free: the queued job runs next.
  auto next = agent.WaitForLaunch();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->job_id(), queued);
}

TEST(CoordinatorProcess, KillNineAtRandomMomentsLosesNoAcknowledgedSubmission) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  const std::string endpoint = coordinator.endpoint();
  zmq::context_t ctx;
  std::vector<std::string> acknowledged;
  std::mt19937 random(12345);
  for (int round = 0; round < 4; ++round) {
    {
      Client client(ctx, endpoint, coordinator.admin_token());
      const int before_kill = 5 + static_cast<int>(random() % 20);
      for (int i = 0; i < before_kill; ++i) acknowledged.push_back(client.Submit(Spec()));
      // A burst in flight when the kill lands: these may or may not be accepted, but none was acknowledged.
      pb::ClientRequest burst;
      burst.set_token(coordinator.admin_token());
      burst.mutable_submit()->set_spec_yaml(Spec());
      for (int i = 0; i < 20; ++i) {
        (void)protocol::Send(client.socket(), protocol::MessageKind::kClientRequest, burst);
      }
      usleep(random() % 3000);
      coordinator.Kill(SIGKILL);
    }
    coordinator.Start(endpoint);
  }
  Client client(ctx, endpoint, coordinator.admin_token());
  for (const auto& id : acknowledged) {
    pb::ClientRequest get;
    get.mutable_get_job()->set_job_id(id);
    pb::ClientReply reply = client.Call(get);
    EXPECT_EQ(reply.error().code(), pb::OK) << id << ": " << reply.error().message();
    EXPECT_EQ(reply.get_job().job().state(), pb::JOB_PENDING) << id;
  }
  // Ids are never reused: a new job gets a number above every acknowledged one.
  const std::string next = client.Submit(Spec());
  EXPECT_GT(next, acknowledged.back());
}

TEST(CoordinatorProcess, GarbageAndWrongVersionFramesGetErrorsAndServiceContinues) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  zmq::context_t ctx;
  Client client(ctx, coordinator.endpoint(), coordinator.admin_token());
  auto& sock = client.socket();

  auto receive_reply = [&]() {
    auto frames = protocol::Receive(sock, false);
    EXPECT_TRUE(frames.ok()) << frames.status().ToString();
    pb::ClientReply reply;
    if (frames.ok()) {
      EXPECT_TRUE(protocol::Parse(*frames, protocol::MessageKind::kClientReply, &reply).ok());
    }
    return reply;
  };
  // 1. Garbage in one frame.
  sock.send(zmq::str_buffer("GET / HTTP/1.1\r\n\r\n"), zmq::send_flags::none);
  pb::ClientReply garbage = receive_reply();
  EXPECT_EQ(garbage.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(garbage.error().message().find("not an Anneal message"), std::string::npos);
  // 2. A valid header of another protocol version.
  const std::string header = protocol::EncodeHeader(protocol::MessageKind::kClientRequest, 99);
  sock.send(zmq::buffer(header), zmq::send_flags::sndmore);
  sock.send(zmq::str_buffer("body"), zmq::send_flags::none);
  pb::ClientReply version = receive_reply();
  EXPECT_EQ(version.error().code(), pb::VERSION_MISMATCH);
  EXPECT_NE(version.error().message().find("version 99"), std::string::npos) << version.error().message();
  // 3. A good header with a body that is not a ClientRequest.
  const std::string good = protocol::EncodeHeader(protocol::MessageKind::kClientRequest);
  sock.send(zmq::buffer(good), zmq::send_flags::sndmore);
  sock.send(zmq::str_buffer("\xff\xff\xff"), zmq::send_flags::none);
  EXPECT_EQ(receive_reply().error().code(), pb::INVALID_ARGUMENT);
  // 4. An agent of another version gets a CoordinatorToAgent error.
  ScriptedAgent agent(ctx, coordinator.endpoint(), "node-v", 1);
  const std::string agent_header = protocol::EncodeHeader(protocol::MessageKind::kAgentToCoordinator, 7);
  agent.socket().send(zmq::buffer(agent_header), zmq::send_flags::sndmore);
  agent.socket().send(zmq::str_buffer("x"), zmq::send_flags::none);
  auto error = agent.WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_error(); }, 5000);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error().code(), pb::VERSION_MISMATCH);
  // Still serving.
  pb::ClientRequest list;
  list.mutable_list_nodes();
  EXPECT_EQ(client.Call(list).error().code(), pb::OK);
  EXPECT_FALSE(client.Submit(Spec()).empty());
}

TEST(CoordinatorProcess, RefusesToStartWithoutAPathPolicy) {
  TempDir dir;
  const std::string cmd = std::string(ANNEAL_COORDINATOR_BIN) + " --bind tcp://127.0.0.1:* --state-dir " + dir.str() +
                          "/state 2>&1";
  FILE* out = popen(cmd.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string text;
  char buf[512];
  while (fgets(buf, sizeof buf, out)) text += buf;
  EXPECT_EQ(WEXITSTATUS(pclose(out)), 2);
  EXPECT_NE(text.find("no path_policy in the config file"), std::string::npos) << text;
}

TEST(CoordinatorProcess, ConfigFileIsReadAndFlagsOverrideIt) {
  TempDir dir;
  const std::string bad = dir.str() + "/bad.yaml";
  std::ofstream(bad) << "bind: tcp://127.0.0.1:*\nheartbeat_timout_ms: 5\n";
  const std::string cmd = std::string(ANNEAL_COORDINATOR_BIN) + " --config " + bad + " --state-dir " + dir.str() +
                          "/state 2>&1";
  FILE* out = popen(cmd.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string text;
  char buf[512];
  while (fgets(buf, sizeof buf, out)) text += buf;
  const int status = pclose(out);
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_NE(text.find("heartbeat_timout_ms"), std::string::npos) << text;

  // The removed shared token is refused with what replaces it.
  const std::string legacy = dir.str() + "/legacy.yaml";
  std::ofstream(legacy) << "token: s3cret\n";
  FILE* old = popen((std::string(ANNEAL_COORDINATOR_BIN) + " --config " + legacy + " --state-dir " + dir.str() +
                     "/state 2>&1").c_str(), "r");
  ASSERT_NE(old, nullptr);
  text.clear();
  while (fgets(buf, sizeof buf, old)) text += buf;
  EXPECT_EQ(WEXITSTATUS(pclose(old)), 2);
  EXPECT_NE(text.find("replaced by users and API tokens"), std::string::npos) << text;

  // A good file: its settings apply; --http-bind from the flags serves /metrics.
  const std::string good = dir.str() + "/good.yaml";
  std::ofstream(good) << "audit_max_records: 10\nheartbeat_timeout_ms: 3000\n"
                          "path_policy: {default: {models: [/], datasets: [/], outputs: [/]}}\n";
  CoordinatorProcess coordinator(dir.str() + "/state", {"--config", good, "--http-bind", "127.0.0.1:0"});
  coordinator.expect_http();
  coordinator.Start();
  ASSERT_GT(coordinator.http_port(), 0);
  zmq::context_t ctx;
  pb::ClientRequest list;
  list.mutable_list_jobs();
  Client wrong(ctx, coordinator.endpoint(), "t0ken");
  EXPECT_EQ(wrong.Call(list).error().code(), pb::UNAUTHENTICATED);
  Client right(ctx, coordinator.endpoint(), coordinator.admin_token());
  EXPECT_EQ(right.Call(list).error().code(), pb::OK);
  const std::string curl = "exec 3<>/dev/tcp/127.0.0.1/" + std::to_string(coordinator.http_port()) +
                           " && printf 'GET /metrics HTTP/1.0\\r\\nAuthorization: Bearer " + coordinator.admin_token() +
                           "\\r\\n\\r\\n' >&3 && timeout 5 cat <&3";
  FILE* http = popen(("bash -c \"" + curl + "\"").c_str(), "r");
  ASSERT_NE(http, nullptr);
  text.clear();
  while (fgets(buf, sizeof buf, http)) text += buf;
  pclose(http);
  EXPECT_NE(text.find("anneal_queue_length"), std::string::npos) << text;
}

TEST(CoordinatorProcess, SigtermShutsDownCleanly) {
  TempDir dir;
  CoordinatorProcess coordinator(dir.str(), kFastFlags);
  coordinator.Start();
  coordinator.Kill(SIGTERM);
  ASSERT_TRUE(WIFEXITED(coordinator.last_status()));
  EXPECT_EQ(WEXITSTATUS(coordinator.last_status()), 0);
  // And the state directory is unlocked: a new process starts on it.
  CoordinatorProcess again(dir.str(), kFastFlags);
  again.Start();
  EXPECT_FALSE(again.endpoint().empty());
}

}  // namespace
}  // namespace anneal::itest
