// anneal-agent with real rank processes on loopback: launch, logs, events, exit codes, stop with a grace
// period, a crashing rank, fencing, pre-launch checks, checkpoint deletion. The coordinator is scripted.
#include <netinet/in.h>
#include <sys/socket.h>

#include "agent_harness.h"

namespace anneal::agent::testing {
namespace {

struct AgentFixture {
  TempDir tmp;
  std::string work = tmp.path + "/work";
  std::string out = tmp.path + "/out";
  std::string marker = "FAKE_MARKER=" + tmp.path;
  ScriptedCoordinator coord;
  std::unique_ptr<AgentProcess> agent;

  explicit AgentFixture(std::vector<std::string> extra = {}) {
    agent = std::make_unique<AgentProcess>(work, coord.endpoint(), std::move(extra));
    auto reg = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); });
    EXPECT_TRUE(reg.has_value()) << "agent did not register; its log:\n" << agent->Log();
  }
  std::map<std::string, std::string> Env(std::map<std::string, std::string> env) {
    env["FAKE_MARKER"] = tmp.path;
    env["FAKE_OUTPUT_DIR"] = out;
    return env;
  }
  ~AgentFixture() {
    if (agent && agent->pid > 0) {
      EXPECT_EQ(agent->Terminate(), 0) << agent->Log();
    }
    EXPECT_TRUE(WaitNoProcesses(marker, 5000)) << "rank processes left behind";
  }
};

TEST(AgentBinary, PrintsVersionAndHelp) {
  const std::string cmd = std::string(ANNEAL_AGENT_BIN) + " --version";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[256] = {};
  ASSERT_NE(std::fgets(buf, sizeof(buf), p), nullptr);
  EXPECT_EQ(::pclose(p), 0);
  EXPECT_NE(std::string(buf).find("anneal-agent 0."), std::string::npos) << buf;
  EXPECT_EQ(std::system((std::string(ANNEAL_AGENT_BIN) + " --help > /dev/null").c_str()), 0);
  EXPECT_NE(std::system((std::string(ANNEAL_AGENT_BIN) + " --slots nope 2> /dev/null").c_str()), 0);
}

// Runs `anneal-agent --verify-artifacts --work-dir work`; its exit code, its stdout in *out.
int VerifyArtifacts(const std::string& work, std::string* out) {
  const std::string cmd = std::string(ANNEAL_AGENT_BIN) + " --verify-artifacts --work-dir " + work + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[512];
  out->clear();
  while (std::fgets(buf, sizeof(buf), p) != nullptr) *out += buf;
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(AgentBinary, VerifyArtifactsRemovesDamagedFilesAndReportsThem) {
  TempDir tmp;
  const std::string blobs = tmp.path + "/work/artifacts/blobs/sha256/";
  std::filesystem::create_directories(blobs);
  const std::string good = "770e607624d689265ca6c44884d0807d9b054d23c473c106c72be9de08b7376c";     // sha256("good")
  const std::string damaged = "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";  // sha256("other")
  std::ofstream(blobs + good) << "good";
  std::ofstream(blobs + damaged) << "0ther";
  std::string out;
  EXPECT_EQ(VerifyArtifacts(tmp.path + "/work", &out), 1) << out;
  EXPECT_NE(out.find("2 files (9 bytes) checked, 1 damaged and removed"), std::string::npos) << out;
  EXPECT_NE(out.find("removed " + damaged), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(blobs + good));
  EXPECT_FALSE(std::filesystem::exists(blobs + damaged));
  EXPECT_EQ(VerifyArtifacts(tmp.path + "/work", &out), 0) << out;
  EXPECT_NE(out.find("1 file (4 bytes) checked, 0 damaged"), std::string::npos) << out;
}

TEST(AgentBinary, RefusesAWorkDirInUseByAnotherAgent) {
  AgentFixture f;
  AgentProcess second(f.work, f.coord.endpoint());
  EXPECT_EQ(second.Wait(5000), 1);
  EXPECT_NE(second.Log().find("is in use by another anneal-agent (pid " + std::to_string(f.agent->pid) + ")"),
            std::string::npos)
      << second.Log();
}

TEST(AgentLaunch, RunsRanksRelaysEventsAndServesLogs) {
  AgentFixture f;
  const auto& reg = f.coord.registrations.at(0);
  EXPECT_EQ(reg.node_id(), "node-a");
  EXPECT_EQ(reg.inventory().slots(), 4u);
  EXPECT_EQ(reg.inventory().work_dir(), f.work);
  EXPECT_EQ(reg.running_tasks_size(), 0);

  f.coord.Send(MakeLaunch("job-ok", 1, 2, f.Env({{"FAKE_STEPS", "3"}}), f.out));
  auto running = f.coord.WaitFor(TaskStateIs("job-ok", pb::TASK_RUNNING));
  ASSERT_TRUE(running.has_value()) << f.agent->Log();
  EXPECT_EQ(running->task_update().status().pids_size(), 2);
  auto done = f.coord.WaitFor(TaskStateIs("job-ok", pb::TASK_SUCCEEDED));
  ASSERT_TRUE(done.has_value()) << f.agent->Log();
  EXPECT_EQ(done->task_update().status().exit_code(), 0);
  EXPECT_EQ(done->task_update().status().epoch(), 1u);

  // Events became reports: 3 metrics steps and one committed checkpoint, in seq order, nothing skipped.
  std::vector<uint64_t> steps;
  int checkpoints = 0;
  for (const auto& m : f.coord.applied_reports) {
    if (m.has_metric_batch()) {
      for (const auto& p : m.metric_batch().points()) {
        steps.push_back(p.step());
        EXPECT_GT(p.values().at("loss"), 0.0);
      }
    }
    if (m.has_checkpoint_committed()) {
      ++checkpoints;
      EXPECT_EQ(m.checkpoint_committed().checkpoint().step(), 3u);
      EXPECT_EQ(m.checkpoint_committed().checkpoint().node_id(), "node-a");
      EXPECT_EQ(m.checkpoint_committed().checkpoint().files_size(), 1);
    }
  }
  EXPECT_EQ(steps, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(checkpoints, 1);
  EXPECT_EQ(f.coord.applied, SeqOf(*done));

  // The task directory: resolved config, per-rank logs with torchrun's environment and both streams.
  const std::string dir = f.work + "/jobs/job-ok/attempt-1";
  EXPECT_NE(ReadText(dir + "/config.yaml").find("model_name_or_path: tiny"), std::string::npos);
  const std::string log1 = ReadText(dir + "/rank-1.log");
  EXPECT_NE(log1.find("RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1"), std::string::npos)
      << log1;
  EXPECT_NE(log1.find("JOB=job-ok ATTEMPT=1 EPOCH=1 CUDA_VISIBLE_DEVICES=- pgid_is_pid=1"), std::string::npos) << log1;
  EXPECT_NE(log1.find("args: train --config " + dir + "/config.yaml"), std::string::npos) << log1;
  EXPECT_NE(log1.find("config first line: model_name_or_path: tiny"), std::string::npos) << log1;
  EXPECT_NE(log1.find("rank 1: stderr works"), std::string::npos) << log1;

  // FetchLogs -> LogChunk, from an offset, with eof once the task ended.
  pb::CoordinatorToAgent fetch;
  fetch.mutable_fetch_logs()->set_request_id(42);
  fetch.mutable_fetch_logs()->set_job_id("job-ok");
  fetch.mutable_fetch_logs()->set_rank(0);
  fetch.mutable_fetch_logs()->set_offset(5);
  fetch.mutable_fetch_logs()->set_max_bytes(1 << 16);
  f.coord.Send(fetch);
  auto chunk = f.coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_log_chunk(); });
  ASSERT_TRUE(chunk.has_value());
  EXPECT_EQ(chunk->log_chunk().request_id(), 42u);
  EXPECT_EQ(chunk->log_chunk().offset(), 5u);
  EXPECT_EQ(chunk->log_chunk().data(), ReadText(dir + "/rank-0.log").substr(5));
  EXPECT_TRUE(chunk->log_chunk().eof());

  // A heartbeat lists no running task any more.
  auto hb = f.coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_heartbeat(); });
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->heartbeat().tasks_size(), 0);
  EXPECT_TRUE(ZombieChildrenOf(f.agent->pid).empty());
}

TEST(AgentStop, KillsARankIgnoringSigtermAfterTheGracePeriod) {
  AgentFixture f;
  f.coord.Send(MakeLaunch("job-stop", 1, 2,
                          f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}, {"FAKE_IGNORE_TERM", "1"},
                                 {"FAKE_CHILD", "1"}}),
                          f.out));
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-stop", pb::TASK_RUNNING)).has_value()) << f.agent->Log();
  // Heartbeats carry the running task with its pids.
  auto hb = f.coord.WaitFor([](const pb::AgentToCoordinator& m) {
    return m.has_heartbeat() && m.heartbeat().tasks_size() == 1;
  });
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->heartbeat().tasks(0).pids_size(), 2);
  // Live tail of a running rank: data so far, not eof.
  pb::CoordinatorToAgent fetch;
  fetch.mutable_fetch_logs()->set_request_id(7);
  fetch.mutable_fetch_logs()->set_job_id("job-stop");
  fetch.mutable_fetch_logs()->set_rank(1);
  f.coord.Send(fetch);
  auto chunk = f.coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_log_chunk(); });
  ASSERT_TRUE(chunk.has_value());
  EXPECT_NE(chunk->log_chunk().data().find("fake rank RANK=1"), std::string::npos) << chunk->log_chunk().data();
  EXPECT_FALSE(chunk->log_chunk().eof());
  fetch.mutable_fetch_logs()->set_job_id("no-such-job");
  f.coord.Send(fetch);
  auto missing = f.coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_log_chunk(); });
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->log_chunk().error().code(), pb::NOT_FOUND);

  pb::CoordinatorToAgent stop;
  stop.mutable_stop()->set_job_id("job-stop");
  stop.mutable_stop()->set_epoch(1);
  stop.mutable_stop()->set_grace_ms(700);
  stop.mutable_stop()->set_reason("cancelled by the user");
  const auto t0 = Clock::now();
  f.coord.Send(stop);
  auto stopped = f.coord.WaitFor(TaskStateIs("job-stop", pb::TASK_STOPPED));
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  ASSERT_TRUE(stopped.has_value()) << f.agent->Log();
  EXPECT_GE(elapsed, 650) << "SIGKILL came before the grace period ended";
  EXPECT_LT(elapsed, 5000);
  const std::string msg = stopped->task_update().status().message();
  EXPECT_NE(msg.find("cancelled by the user"), std::string::npos) << msg;
  EXPECT_NE(msg.find("killed by signal 9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("after the grace period"), std::string::npos) << msg;
  // The grandchildren went with their ranks' process groups; the agent (their subreaper) reaped everything.
  EXPECT_TRUE(WaitNoProcesses(f.marker, 3000));
  f.coord.Pump(200);
  EXPECT_TRUE(ZombieChildrenOf(f.agent->pid).empty());
}

TEST(AgentFailure, CrashingRankIsReportedAtOnceAndStopsItsLocalGang) {
  AgentFixture f;
  f.coord.Send(MakeLaunch("job-crash", 1, 3,
                          f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}, {"FAKE_CRASH_RANK", "1"},
                                 {"FAKE_CRASH_AFTER_MS", "300"}}),
                          f.out));
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-crash", pb::TASK_RUNNING)).has_value()) << f.agent->Log();
  const auto t0 = Clock::now();
  auto failed = f.coord.WaitFor(TaskStateIs("job-crash", pb::TASK_FAILED), 5000);
  ASSERT_TRUE(failed.has_value()) << f.agent->Log();
  // The crash comes 300 ms after start; "at once" = well before any grace period or heartbeat timeout.
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count(), 2500);
  const auto& s = failed->task_update().status();
  EXPECT_EQ(s.exit_code(), 3);
  EXPECT_EQ(s.signal(), 0);
  EXPECT_NE(s.message().find("rank 1 exited with code 3"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("crashed on purpose"), std::string::npos) << s.message();
  // The other local ranks are stopped (SIGTERM -> 143) without any order from the coordinator.
  EXPECT_TRUE(WaitNoProcesses(f.marker, 3000)) << f.agent->Log();
  f.coord.Pump(300);
  EXPECT_TRUE(ZombieChildrenOf(f.agent->pid).empty());
  int failed_updates = 0;
  for (const auto& m : f.coord.applied_reports) failed_updates += TaskStateIs("job-crash", pb::TASK_FAILED)(m);
  EXPECT_EQ(failed_updates, 1);
}

TEST(AgentShutdown, SigtermStopsTheRanksAndReportsBeforeExiting) {
  AgentFixture f({"--shutdown-grace-ms", "300"});
  f.coord.Send(MakeLaunch("job-sd", 1, 2,
                          f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}, {"FAKE_IGNORE_TERM", "1"}}), f.out));
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-sd", pb::TASK_RUNNING)).has_value()) << f.agent->Log();
  ::kill(f.agent->pid, SIGTERM);
  int code = -1;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!f.agent->Exited(&code) && Clock::now() < deadline) f.coord.Pump(50);
  ASSERT_EQ(code, 0) << f.agent->Log();
  f.coord.Pump(200);
  bool stopped = false;
  for (const auto& m : f.coord.applied_reports) stopped = stopped || TaskStateIs("job-sd", pb::TASK_STOPPED)(m);
  EXPECT_TRUE(stopped) << "the final TaskUpdate was not delivered before the agent exited";
  EXPECT_TRUE(LiveProcessesWithEnv(f.marker).empty()) << "ranks outlived their agent";
}

TEST(AgentFencing, RefusesLaunchesAndStopsOfAnOlderEpoch) {
  AgentFixture f;
  f.coord.Send(MakeLaunch("job-f", 5, 1, f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}}), f.out));
  auto running = f.coord.WaitFor(TaskStateIs("job-f", pb::TASK_RUNNING));
  ASSERT_TRUE(running.has_value()) << f.agent->Log();
  const int32_t pid = running->task_update().status().pids(0);

  // An older launch is refused; the same launch again starts nothing new.
  auto stale = MakeLaunch("job-f", 4, 1, f.Env({}), f.out);
  stale.mutable_launch()->set_attempt(7);
  f.coord.Send(stale);
  auto refused = f.coord.WaitFor([](const pb::AgentToCoordinator& m) {
    return m.has_task_update() && m.task_update().status().epoch() == 4;
  });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->task_update().status().state(), pb::TASK_FAILED);
  EXPECT_NE(refused->task_update().status().message().find("stale epoch 4"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(f.work + "/jobs/job-f/attempt-7"));
  f.coord.Send(MakeLaunch("job-f", 5, 1, f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}}), f.out));
  auto again = f.coord.WaitFor(TaskStateIs("job-f", pb::TASK_RUNNING));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->task_update().status().pids(0), pid);

  // A stop of an older epoch is refused: the rank keeps running.
  pb::CoordinatorToAgent old_stop;
  old_stop.mutable_stop()->set_job_id("job-f");
  old_stop.mutable_stop()->set_epoch(3);
  f.coord.Send(old_stop);
  f.coord.Pump(500);
  EXPECT_EQ(::kill(pid, 0), 0) << "a stale StopTask stopped the rank";

  // A newer launch replaces the old task: the old ranks are killed first.
  f.coord.Send(MakeLaunch("job-f", 6, 1, f.Env({{"FAKE_STEPS", "1"}}), f.out));
  auto superseded = f.coord.WaitFor(TaskStateIs("job-f", pb::TASK_STOPPED));
  ASSERT_TRUE(superseded.has_value()) << f.agent->Log();
  EXPECT_EQ(superseded->task_update().status().epoch(), 5u);
  auto newer = f.coord.WaitFor(TaskStateIs("job-f", pb::TASK_SUCCEEDED));
  ASSERT_TRUE(newer.has_value()) << f.agent->Log();
  EXPECT_EQ(newer->task_update().status().epoch(), 6u);

  // A stop for a task that never ran here is confirmed at once; a later launch of that epoch is refused.
  pb::CoordinatorToAgent stop_unknown;
  stop_unknown.mutable_stop()->set_job_id("job-never");
  stop_unknown.mutable_stop()->set_epoch(2);
  f.coord.Send(stop_unknown);
  auto confirmed = f.coord.WaitFor(TaskStateIs("job-never", pb::TASK_STOPPED));
  ASSERT_TRUE(confirmed.has_value());
  EXPECT_EQ(confirmed->task_update().status().epoch(), 2u);
  f.coord.Send(MakeLaunch("job-never", 2, 1, f.Env({}), f.out));
  auto late = f.coord.WaitFor(TaskStateIs("job-never", pb::TASK_FAILED));
  ASSERT_TRUE(late.has_value());
  EXPECT_NE(late->task_update().status().message().find("already stopped"), std::string::npos);
}

TEST(AgentPrelaunch, UnwritableOutputDirAndBusyRendezvousPortFailTheTask) {
  AgentFixture f;
  f.coord.Send(MakeLaunch("job-ro", 1, 1, f.Env({}), "/proc/anneal-cannot-write-here"));
  auto failed = f.coord.WaitFor(TaskStateIs("job-ro", pb::TASK_FAILED));
  ASSERT_TRUE(failed.has_value()) << f.agent->Log();
  EXPECT_NE(failed->task_update().status().message().find("output directory /proc/anneal-cannot-write-here"),
            std::string::npos)
      << failed->task_update().status().message();

  // Someone listens on the rendezvous port: the rank-0 node refuses to launch.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto launch = MakeLaunch("job-port", 1, 1, f.Env({}), f.out);
  launch.mutable_launch()->set_master_port(ntohs(addr.sin_port));
  f.coord.Send(launch);
  auto port_failed = f.coord.WaitFor(TaskStateIs("job-port", pb::TASK_FAILED));
  ::close(fd);
  ASSERT_TRUE(port_failed.has_value()) << f.agent->Log();
  EXPECT_NE(port_failed->task_update().status().message().find("rendezvous port"), std::string::npos);
}

TEST(AgentCheckpoints, DeletesInsideTheOutputDirOnlyAndAnswers) {
  AgentFixture f;
  namespace fs = std::filesystem;
  fs::create_directories(f.out + "/checkpoint-10");
  std::ofstream(f.out + "/checkpoint-10/model.safetensors") << "weights";
  const std::string outside = f.tmp.path + "/precious";
  fs::create_directories(outside);
  std::ofstream(outside + "/keep.txt") << "keep";
  fs::create_symlink(outside, f.out + "/checkpoint-20");

  uint64_t request = 0;
  auto ask = [&](const std::string& path, uint64_t step) {
    pb::CoordinatorToAgent del;
    del.mutable_delete_checkpoint()->set_request_id(++request);
    del.mutable_delete_checkpoint()->set_job_id("job-ck");
    del.mutable_delete_checkpoint()->set_step(step);
    del.mutable_delete_checkpoint()->set_path(path);
    del.mutable_delete_checkpoint()->set_output_dir(f.out);
    f.coord.Send(del);
    auto answer = f.coord.WaitFor([step](const pb::AgentToCoordinator& m) {
      return m.has_checkpoint_deleted() && m.checkpoint_deleted().step() == step;
    });
    EXPECT_TRUE(answer.has_value());
    EXPECT_NE(SeqOf(*answer), 0u) << "CheckpointDeleted is a sequenced report";
    return answer ? answer->checkpoint_deleted() : pb::CheckpointDeleted();
  };
  auto outside_answer = ask(outside, 1);
  EXPECT_FALSE(outside_answer.ok());
  EXPECT_NE(outside_answer.error().find("outside the output directory"), std::string::npos) << outside_answer.error();
  auto dotdot = ask(f.out + "/../precious", 2);
  EXPECT_FALSE(dotdot.ok());
  EXPECT_NE(dotdot.error().find(".."), std::string::npos);
  auto link = ask(f.out + "/checkpoint-20", 3);
  EXPECT_FALSE(link.ok()) << "a symlink escaping the output directory was followed";
  EXPECT_TRUE(fs::exists(outside + "/keep.txt"));

  auto inside = ask(f.out + "/checkpoint-10", 10);
  EXPECT_TRUE(inside.ok()) << inside.error();
  EXPECT_FALSE(fs::exists(f.out + "/checkpoint-10"));
  EXPECT_TRUE(ask(f.out + "/checkpoint-10", 10).ok()) << "deleting again is idempotent";
}

TEST(AgentConfinement, RanksDieWhenTheAgentIsKilled) {
  AgentFixture f;  // no --keep-tasks-on-exit: ranks carry PR_SET_PDEATHSIG
  f.coord.Send(MakeLaunch("job-orphan", 1, 2, f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}}), f.out));
  auto running = f.coord.WaitFor(TaskStateIs("job-orphan", pb::TASK_RUNNING));
  ASSERT_TRUE(running.has_value()) << f.agent->Log();
  const auto& pids = running->task_update().status().pids();
  ASSERT_EQ(pids.size(), 2);
  for (int32_t pid : pids) {
    EXPECT_EQ(::kill(pid, 0), 0);
    // A root agent's rank runs as nobody.
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line, uid_line;
    while (std::getline(status, line)) {
      if (line.rfind("Uid:", 0) == 0) uid_line = line;
    }
    if (::geteuid() == 0) {
      EXPECT_EQ(uid_line, "Uid:\t65534\t65534\t65534\t65534") << pid;
    }
  }
  ::kill(f.agent->pid, SIGKILL);
  f.agent->Wait(5000);
  EXPECT_TRUE(WaitNoProcesses(f.marker, 5000)) << "ranks outlived their SIGKILLed agent";
}

TEST(AgentConfinement, TheAgentsSecretsNeverReachARank) {
  ::setenv("ANNEAL_AGENT_TEST_SECRET", "agent-secret-value", 1);
  AgentFixture f;  // the agent inherits the secret
  ::unsetenv("ANNEAL_AGENT_TEST_SECRET");
  f.coord.Send(MakeLaunch("job-env", 1, 1, f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}}), f.out));
  auto running = f.coord.WaitFor(TaskStateIs("job-env", pb::TASK_RUNNING));
  ASSERT_TRUE(running.has_value()) << f.agent->Log();
  const int32_t pid = running->task_update().status().pids(0);
  std::ifstream agent_env("/proc/" + std::to_string(f.agent->pid) + "/environ");
  std::string agent_text((std::istreambuf_iterator<char>(agent_env)), std::istreambuf_iterator<char>());
  ASSERT_NE(agent_text.find("agent-secret-value"), std::string::npos) << "the test needs the secret in the agent";
  std::ifstream rank_env("/proc/" + std::to_string(pid) + "/environ");
  std::string rank_text((std::istreambuf_iterator<char>(rank_env)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rank_text.find("agent-secret-value"), std::string::npos);
  EXPECT_NE(rank_text.find("FAKE_MARKER=" + f.tmp.path), std::string::npos) << "the job's variables reach it";
  // The node's address (--address, default the hostname): ranks bind their collectives' transport to it.
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_NE(rank_text.find(std::string("ANNEAL_NODE_ADDRESS=") + host + '\0'), std::string::npos);
  pb::CoordinatorToAgent stop;
  stop.mutable_stop()->set_job_id("job-env");
  stop.mutable_stop()->set_epoch(1);
  f.coord.Send(stop);
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-env", pb::TASK_STOPPED)).has_value());
}

TEST(AgentConfinement, AnotherJobOnAHeldOutputDirectoryIsRefusedAndTheAgentServesOn) {
  AgentFixture f;
  f.coord.Send(MakeLaunch("job-holder", 1, 1, f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}}), f.out));
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-holder", pb::TASK_RUNNING)).has_value()) << f.agent->Log();
  f.coord.Send(MakeLaunch("job-intruder", 1, 1, f.Env({{"FAKE_STEPS", "1"}}), f.out));
  auto refused = f.coord.WaitFor(TaskStateIs("job-intruder", pb::TASK_FAILED));
  ASSERT_TRUE(refused.has_value()) << f.agent->Log();
  EXPECT_NE(refused->task_update().status().message().find("locked by job job-holder epoch 1"), std::string::npos)
      << refused->task_update().status().message();
  // Still serving: another output directory runs.
  f.coord.Send(MakeLaunch("job-other", 1, 1, f.Env({{"FAKE_STEPS", "1"}}), f.tmp.path + "/out2"));
  EXPECT_TRUE(f.coord.WaitFor(TaskStateIs("job-other", pb::TASK_SUCCEEDED)).has_value()) << f.agent->Log();
  pb::CoordinatorToAgent stop;
  stop.mutable_stop()->set_job_id("job-holder");
  stop.mutable_stop()->set_epoch(1);
  f.coord.Send(stop);
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-holder", pb::TASK_STOPPED)).has_value());
}

}  // namespace
}  // namespace anneal::agent::testing

namespace anneal::agent::testing {
namespace {

// The resolved spec spells an unset cache dir as tokenized_cache_dir: "": the agent still prepares the default
// <output_dir>/../.anneal-cache for the rank's user (the demo's ranks failed creating it as nobody).
TEST(AgentConfinement, AnUnsetCacheDirInTheResolvedSpecIsTheDefaultPreparedForTheRank) {
  AgentFixture f;
  pb::CoordinatorToAgent launch = MakeLaunch("job-cache", 1, 1, f.Env({{"FAKE_STEPS", "0"}}), f.out);
  launch.mutable_launch()->set_trainer_config_yaml("model_name_or_path: tiny\noutput_dir: " + f.out +
                                                   "\ndata:\n  tokenized_cache_dir: \"\"\n");
  f.coord.Send(launch);
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-cache", pb::TASK_SUCCEEDED)).has_value()) << f.agent->Log();
  const std::filesystem::path cache = std::filesystem::path(f.out).parent_path() / ".anneal-cache";
  struct stat out_stat {}, cache_stat {};
  ASSERT_EQ(::stat(f.out.c_str(), &out_stat), 0);
  ASSERT_EQ(::stat(cache.c_str(), &cache_stat), 0) << cache << " was not prepared";
  EXPECT_EQ(cache_stat.st_uid, out_stat.st_uid) << "the cache belongs to the same user as the output directory";
}

}  // namespace
}  // namespace anneal::agent::testing

namespace anneal::agent::testing {
namespace {

// A coordinator that declared the node down refuses its session; the agent registers again listing the task it
// still runs, so the coordinator can re-adopt it (coordinator/reconnect.cc).
TEST(AgentReconnect, ARefusedSessionRegistersAgainListingItsRunningTask) {
  AgentFixture f;
  f.coord.Send(MakeLaunch("job-r", 1, 1, f.Env({{"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}}), f.out));
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-r", pb::TASK_RUNNING)).has_value()) << f.agent->Log();
  const size_t before = f.coord.registrations.size();
  pb::CoordinatorToAgent refused;
  refused.mutable_error()->set_code(pb::FAILED_PRECONDITION);
  refused.mutable_error()->set_message("not registered with this coordinator (the node was declared down)");
  f.coord.Send(refused);
  for (int i = 0; i < 100 && f.coord.registrations.size() == before; ++i) f.coord.Pump(50);
  ASSERT_GT(f.coord.registrations.size(), before) << f.agent->Log();
  const pb::RegisterRequest& again = f.coord.registrations.back();
  ASSERT_EQ(again.running_tasks_size(), 1) << f.agent->Log();
  EXPECT_EQ(again.running_tasks(0).job_id(), "job-r");
  EXPECT_EQ(again.running_tasks(0).state(), pb::TASK_RUNNING);
  pb::CoordinatorToAgent stop;
  stop.mutable_stop()->set_job_id("job-r");
  stop.mutable_stop()->set_epoch(1);
  f.coord.Send(stop);
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-r", pb::TASK_STOPPED)).has_value());
}

}  // namespace
}  // namespace anneal::agent::testing
