// anneal-agent across failures: the agent restarts while its ranks run (they are re-adopted, events keep
// flowing), and the coordinator goes away while events flow (nothing lost, nothing applied twice).
#include "agent_harness.h"

namespace anneal::agent::testing {
namespace {

std::vector<uint64_t> AppliedSteps(const ScriptedCoordinator& c, const std::string& job) {
  std::vector<uint64_t> steps;
  for (const auto& m : c.applied_reports) {
    if (!m.has_metric_batch() || m.metric_batch().job_id() != job) continue;
    for (const auto& p : m.metric_batch().points()) steps.push_back(p.step());
  }
  return steps;
}

std::vector<uint64_t> Range(uint64_t n) {
  std::vector<uint64_t> v;
  for (uint64_t i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

char ProcessStateLetter(pid_t pid) {
  const std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? '\0' : stat[close + 2];
}

// Reaps every zombie child of the test process (ranks re-parented to it as subreaper).
void ReapAll() {
  int st;
  while (::waitpid(-1, &st, WNOHANG) > 0) {
  }
}

TEST(AgentRestart, RanksKeepRunningAndAreReadoptedByTheNextAgent) {
  // Ranks orphaned by the first agent are re-parented to this test process, not to an init that may not reap.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir tmp;
  const std::string work = tmp.path + "/work";
  const std::string marker = "FAKE_MARKER=" + tmp.path;
  ScriptedCoordinator coord;
  auto first = std::make_unique<AgentProcess>(work, coord.endpoint(), std::vector<std::string>{"--keep-tasks-on-exit"});
  ASSERT_TRUE(coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); }).has_value());
  coord.Send(MakeLaunch("job-r", 1, 2,
                        {{"FAKE_MARKER", tmp.path}, {"FAKE_STEPS", "25"}, {"FAKE_INTERVAL_MS", "80"},
                         {"FAKE_OUTPUT_DIR", tmp.path}},
                        tmp.path + "/out"));
  auto running = coord.WaitFor(TaskStateIs("job-r", pb::TASK_RUNNING));
  ASSERT_TRUE(running.has_value()) << first->Log();
  const std::vector<int32_t> pids(running->task_update().status().pids().begin(),
                                  running->task_update().status().pids().end());
  ASSERT_TRUE(coord.WaitFor([&](const pb::AgentToCoordinator&) { return AppliedSteps(coord, "job-r").size() >= 3; })
                  .has_value());

  // The agent stops; --keep-tasks-on-exit leaves the ranks running.
  ASSERT_EQ(first->Terminate(), 0) << first->Log();
  for (int32_t pid : pids) EXPECT_EQ(::kill(pid, 0), 0) << "rank " << pid << " died with its agent";
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // events pile up in the pipes meanwhile

  AgentProcess second(work, coord.endpoint());
  auto reg = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); });
  ASSERT_TRUE(reg.has_value()) << second.Log();
  ASSERT_EQ(reg->register_().running_tasks_size(), 1) << second.Log();
  const auto& adopted = reg->register_().running_tasks(0);
  EXPECT_EQ(adopted.job_id(), "job-r");
  EXPECT_EQ(adopted.epoch(), 1u);
  EXPECT_EQ(adopted.state(), pb::TASK_RUNNING);
  EXPECT_EQ(std::vector<int32_t>(adopted.pids().begin(), adopted.pids().end()), pids);

  // The re-adopted ranks finish; every metric arrives exactly once, across both agents.
  auto done = coord.WaitFor(TaskStateIs("job-r", pb::TASK_SUCCEEDED), 15000);
  ASSERT_TRUE(done.has_value()) << second.Log();
  coord.Pump(300);
  EXPECT_EQ(AppliedSteps(coord, "job-r"), Range(25));
  ReapAll();
  EXPECT_TRUE(WaitNoProcesses(marker, 3000));
  EXPECT_EQ(second.Terminate(), 0) << second.Log();
}

TEST(AgentRestart, ReadoptedTaskIsStoppedWhenTheCoordinatorSaysSo) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir tmp;
  const std::string work = tmp.path + "/work";
  const std::string marker = "FAKE_MARKER=" + tmp.path;
  ScriptedCoordinator coord;
  {
    AgentProcess first(work, coord.endpoint(), {"--keep-tasks-on-exit"});
    ASSERT_TRUE(coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); }).has_value());
    coord.Send(MakeLaunch("job-k", 3, 1, {{"FAKE_MARKER", tmp.path}, {"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}},
                          tmp.path + "/out"));
    ASSERT_TRUE(coord.WaitFor(TaskStateIs("job-k", pb::TASK_RUNNING)).has_value()) << first.Log();
    ASSERT_EQ(first.Terminate(), 0) << first.Log();
  }
  AgentProcess second(work, coord.endpoint());
  auto reg = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); });
  ASSERT_TRUE(reg.has_value());
  ASSERT_EQ(reg->register_().running_tasks_size(), 1);
  // A stale launch is still refused after the restart (the epoch is remembered on disk).
  coord.Send(MakeLaunch("job-k", 2, 1, {{"FAKE_MARKER", tmp.path}}, tmp.path + "/out"));
  auto refused = coord.WaitFor([](const pb::AgentToCoordinator& m) {
    return m.has_task_update() && m.task_update().status().epoch() == 2;
  });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->task_update().status().state(), pb::TASK_FAILED);

  pb::CoordinatorToAgent stop;
  stop.mutable_stop()->set_job_id("job-k");
  stop.mutable_stop()->set_epoch(3);
  stop.mutable_stop()->set_grace_ms(2000);
  coord.Send(stop);
  auto stopped = coord.WaitFor(TaskStateIs("job-k", pb::TASK_STOPPED), 8000);
  ASSERT_TRUE(stopped.has_value()) << second.Log();
  EXPECT_EQ(stopped->task_update().status().epoch(), 3u);
  ReapAll();
  EXPECT_TRUE(WaitNoProcesses(marker, 3000));
  EXPECT_EQ(second.Terminate(), 0) << second.Log();
}

TEST(AgentRestart, ANewerEpochLaunchReplacesAReadoptedTask) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir tmp;
  const std::string work = tmp.path + "/work";
  const std::string marker = "FAKE_MARKER=" + tmp.path;
  ScriptedCoordinator coord;
  int32_t old_pid = 0;
  {
    AgentProcess first(work, coord.endpoint(), {"--keep-tasks-on-exit"});
    ASSERT_TRUE(coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); }).has_value());
    coord.Send(MakeLaunch("job-n", 1, 1, {{"FAKE_MARKER", tmp.path}, {"FAKE_STEPS", "0"}, {"FAKE_SLEEP_MS", "60000"}},
                          tmp.path + "/out"));
    auto running = coord.WaitFor(TaskStateIs("job-n", pb::TASK_RUNNING));
    ASSERT_TRUE(running.has_value()) << first.Log();
    old_pid = running->task_update().status().pids(0);
    ASSERT_EQ(first.Terminate(), 0) << first.Log();
  }
  AgentProcess second(work, coord.endpoint());
  auto reg = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); });
  ASSERT_TRUE(reg.has_value());
  ASSERT_EQ(reg->register_().running_tasks_size(), 1);
  auto next = MakeLaunch("job-n", 2, 1, {{"FAKE_MARKER", tmp.path}, {"FAKE_STEPS", "1"}}, tmp.path + "/out");
  next.mutable_launch()->set_attempt(2);
  coord.Send(next);
  auto superseded = coord.WaitFor(TaskStateIs("job-n", pb::TASK_STOPPED), 8000);
  ASSERT_TRUE(superseded.has_value()) << second.Log();
  EXPECT_EQ(superseded->task_update().status().epoch(), 1u);
  auto done = coord.WaitFor(TaskStateIs("job-n", pb::TASK_SUCCEEDED), 8000);
  ASSERT_TRUE(done.has_value()) << second.Log();
  EXPECT_EQ(done->task_update().status().epoch(), 2u);
  ReapAll();
  EXPECT_NE(ProcessStateLetter(old_pid), 'S') << "the old rank survived its replacement";
  EXPECT_TRUE(WaitNoProcesses(marker, 3000));
  EXPECT_EQ(second.Terminate(), 0) << second.Log();
}

TEST(AgentOutage, NoReportIsLostOrAppliedTwiceAcrossACoordinatorRestart) {
  TempDir tmp;
  const std::string work = tmp.path + "/work";
  ScriptedCoordinator coord;
  AgentProcess agent(work, coord.endpoint());
  ASSERT_TRUE(coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); }).has_value());
  coord.Send(MakeLaunch("job-o", 1, 1,
                        {{"FAKE_MARKER", tmp.path}, {"FAKE_STEPS", "40"}, {"FAKE_INTERVAL_MS", "40"},
                         {"FAKE_OUTPUT_DIR", tmp.path}},
                        tmp.path + "/out"));
  ASSERT_TRUE(coord.WaitFor([&](const pb::AgentToCoordinator&) { return AppliedSteps(coord, "job-o").size() >= 5; })
                  .has_value())
      << agent.Log();

  coord.Close();  // the coordinator is down while the rank keeps emitting metrics
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  coord.Restart();

  auto done = coord.WaitFor(
      [&](const pb::AgentToCoordinator&) {
        for (const auto& m : coord.applied_reports) {
          if (TaskStateIs("job-o", pb::TASK_SUCCEEDED)(m)) return true;
        }
        return false;
      },
      15000);
  ASSERT_TRUE(done.has_value()) << agent.Log();
  EXPECT_GE(coord.registrations.size(), 2u) << "the agent did not re-register after the outage";
  // Every metric applied exactly once, in order; seqs contiguous; a resent report is byte-identical.
  EXPECT_EQ(AppliedSteps(coord, "job-o"), Range(40));
  for (size_t i = 0; i < coord.applied_reports.size(); ++i) EXPECT_EQ(SeqOf(coord.applied_reports[i]), i + 1);
  for (const auto& [seq, copies] : coord.receipts) {
    for (const auto& c : copies) EXPECT_EQ(c, copies.front()) << "seq " << seq << " was resent with other content";
  }
  EXPECT_TRUE(WaitNoProcesses("FAKE_MARKER=" + tmp.path, 3000));
  EXPECT_EQ(agent.Terminate(), 0) << agent.Log();
}

TEST(AgentConnect, KeepsTryingUntilTheCoordinatorComesUp) {
  TempDir tmp;
  ScriptedCoordinator coord;
  coord.Close();  // nobody listens on the port yet
  AgentProcess agent(tmp.path + "/work", coord.endpoint());
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  int code = 0;
  ASSERT_FALSE(agent.Exited(&code)) << "the agent gave up without a coordinator:\n" << agent.Log();
  coord.Restart();
  auto reg = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); }, 10000);
  ASSERT_TRUE(reg.has_value()) << agent.Log();
  EXPECT_EQ(reg->register_().node_id(), "node-a");
  auto hb = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_heartbeat(); }, 5000);
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->heartbeat().session(), coord.session);
  EXPECT_EQ(agent.Terminate(), 0) << agent.Log();
}

}  // namespace
}  // namespace anneal::agent::testing
