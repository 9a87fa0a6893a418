// anneal-agent obeying PreemptTask with real rank processes (agent_fake_rank) and a scripted coordinator:
// ranks that checkpoint and exit 75 end TASK_PREEMPTED with exit code 75, a rank ignoring SIGUSR1 is killed at
// the deadline (TASK_PREEMPTED, signal 9), an order for another epoch is ignored, and an agent restarted during
// the preemption still reports TASK_PREEMPTED.
#include "agent_harness.h"

namespace anneal::agent::testing {
namespace {

pb::CoordinatorToAgent MakePreempt(const std::string& job, uint64_t epoch, uint32_t grace_ms) {
  pb::CoordinatorToAgent msg;
  msg.mutable_preempt()->set_job_id(job);
  msg.mutable_preempt()->set_epoch(epoch);
  msg.mutable_preempt()->set_grace_ms(grace_ms);
  msg.mutable_preempt()->set_reason("reclaimed for team b");
  return msg;
}

struct PreemptFixture {
  TempDir tmp;
  std::string work = tmp.path + "/work";
  std::string out = tmp.path + "/out";
  std::string marker = "FAKE_MARKER=" + tmp.path;
  ScriptedCoordinator coord;
  std::unique_ptr<AgentProcess> agent;

  explicit PreemptFixture(std::vector<std::string> extra = {}) { Start(std::move(extra)); }
  void Start(std::vector<std::string> extra = {}) {
    agent = std::make_unique<AgentProcess>(work, coord.endpoint(), std::move(extra));
    ASSERT_TRUE(coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); }).has_value())
        << agent->Log();
  }
  std::map<std::string, std::string> Env(std::map<std::string, std::string> env) {
    env["FAKE_MARKER"] = tmp.path;
    env["FAKE_OUTPUT_DIR"] = out;
    return env;
  }
  // Launches `ranks` ranks that run 20 steps of 50 ms and then sleep; waits for TASK_RUNNING and a first step.
  void LaunchRunning(const std::string& job, uint64_t epoch, int ranks, const std::string& on_preempt) {
    coord.Send(MakeLaunch(job, epoch, ranks,
                          Env({{"FAKE_STEPS", "20"},
                               {"FAKE_INTERVAL_MS", "50"},
                               {"FAKE_SLEEP_MS", "60000"},
                               {"FAKE_PREEMPT", on_preempt}}),
                          out));
    ASSERT_TRUE(coord.WaitFor(TaskStateIs(job, pb::TASK_RUNNING)).has_value()) << agent->Log();
    ASSERT_TRUE(coord
                    .WaitFor([&](const pb::AgentToCoordinator& m) {
                      return m.has_metric_batch() && m.metric_batch().job_id() == job;
                    })
                    .has_value());
  }
  ~PreemptFixture() {
    if (agent && agent->pid > 0) {
      EXPECT_EQ(agent->Terminate(), 0) << agent->Log();
    }
    EXPECT_TRUE(WaitNoProcesses(marker, 5000)) << "rank processes left behind";
  }
};

std::string PreemptedEventText(const ScriptedCoordinator& c) {
  for (const auto& m : c.applied_reports) {
    if (!m.has_metric_batch()) continue;
    for (const auto& e : m.metric_batch().events()) {
      if (e.kind() == "preempted") return e.message();
    }
  }
  return "";
}

TEST(AgentPreempt, RanksThatCheckpointAndExit75EndTaskPreempted) {
  PreemptFixture f;
  f.LaunchRunning("job-p", 1, 2, "exit");
  const auto ordered = Clock::now();
  f.coord.Send(MakePreempt("job-p", 1, 30000));
  auto done = f.coord.WaitFor(TaskStateIs("job-p", pb::TASK_PREEMPTED));
  ASSERT_TRUE(done.has_value()) << f.agent->Log();
  EXPECT_LT(Clock::now() - ordered, std::chrono::seconds(5)) << "the ranks were waited for until the deadline";
  const pb::TaskStatus& s = done->task_update().status();
  EXPECT_EQ(s.exit_code(), 75);
  EXPECT_EQ(s.signal(), 0);
  EXPECT_EQ(s.epoch(), 1u);
  EXPECT_NE(s.message().find("preempted (reclaimed for team b): rank 0 exited with code 75; rank 1 exited with "
                             "code 75"),
            std::string::npos)
      << s.message();
  f.coord.Pump(200);
  // The checkpoint taken at the preemption was committed, and the history says where the job stopped.
  bool committed = false;
  for (const auto& m : f.coord.applied_reports) committed = committed || m.has_checkpoint_committed();
  EXPECT_TRUE(committed);
  EXPECT_NE(PreemptedEventText(f.coord).find("preempted at step "), std::string::npos);
  EXPECT_NE(PreemptedEventText(f.coord).find("checkpoint " + f.out + "/checkpoint-"), std::string::npos);
  // Nothing of the job is FAILED, and the rank logs say the ranks got SIGUSR1 themselves.
  for (const auto& m : f.coord.applied_reports) {
    EXPECT_FALSE(m.has_task_update() && m.task_update().status().state() == pb::TASK_FAILED);
  }
  const std::string log1 = ReadText(f.work + "/jobs/job-p/attempt-1/rank-1.log");
  EXPECT_NE(log1.find("rank 1: SIGUSR1, checkpointed at step"), std::string::npos) << log1;
}

TEST(AgentPreempt, ARankIgnoringTheSignalIsKilledAtTheDeadline) {
  PreemptFixture f;
  f.LaunchRunning("job-i", 1, 1, "ignore");
  const auto ordered = Clock::now();
  f.coord.Send(MakePreempt("job-i", 1, 800));
  auto done = f.coord.WaitFor(TaskStateIs("job-i", pb::TASK_PREEMPTED));
  ASSERT_TRUE(done.has_value()) << f.agent->Log();
  EXPECT_GE(Clock::now() - ordered, std::chrono::milliseconds(800)) << "killed before the deadline";
  const pb::TaskStatus& s = done->task_update().status();
  EXPECT_EQ(s.signal(), 9);
  EXPECT_EQ(s.exit_code(), 137);
  EXPECT_NE(s.message().find("rank 0 killed by signal 9 (Killed) after the grace period"), std::string::npos)
      << s.message();
  EXPECT_TRUE(PreemptedEventText(f.coord).empty());  // it never said it checkpointed
}

TEST(AgentPreempt, AnOrderForAnotherEpochIsIgnored) {
  PreemptFixture f;
  f.LaunchRunning("job-e", 2, 1, "exit");
  f.coord.Send(MakePreempt("job-e", 1, 0));  // an older attempt's order, delivered late
  f.coord.Send(MakePreempt("job-e", 3, 0));  // an epoch this node never launched
  f.coord.Pump(600);
  for (const auto& m : f.coord.all) {
    ASSERT_FALSE(m.has_task_update() && m.task_update().status().state() != pb::TASK_RUNNING)
        << "a stale preempt order ended the task: " << m.task_update().status().message();
  }
  auto hb = f.coord.WaitFor([](const pb::AgentToCoordinator& m) {
    return m.has_heartbeat() && m.heartbeat().tasks_size() == 1 && m.heartbeat().tasks(0).state() == pb::TASK_RUNNING;
  });
  EXPECT_TRUE(hb.has_value());
  EXPECT_NE(f.agent->Log().find("preempt of job job-e epoch 1 ignored: no task of that epoch runs here (epoch 2 "
                                "does)"),
            std::string::npos)
      << f.agent->Log();
  // The agent still serves: the right epoch's order preempts.
  f.coord.Send(MakePreempt("job-e", 2, 30000));
  auto done = f.coord.WaitFor(TaskStateIs("job-e", pb::TASK_PREEMPTED));
  ASSERT_TRUE(done.has_value()) << f.agent->Log();
  EXPECT_EQ(done->task_update().status().exit_code(), 75);
}

TEST(AgentPreempt, AnAgentRestartedDuringThePreemptionStillReportsPreempted) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphaned ranks come to this process, which reaps them
  PreemptFixture f({"--ranks-survive-agent"});
  // The ranks take 1.5 s to "checkpoint" after the signal; the agent dies meanwhile.
  f.coord.Send(MakeLaunch("job-r", 1, 2,
                          f.Env({{"FAKE_STEPS", "20"},
                                 {"FAKE_INTERVAL_MS", "50"},
                                 {"FAKE_SLEEP_MS", "60000"},
                                 {"FAKE_PREEMPT", "exit"},
                                 {"FAKE_PREEMPT_DELAY_MS", "1500"}}),
                          f.out));
  ASSERT_TRUE(f.coord.WaitFor(TaskStateIs("job-r", pb::TASK_RUNNING)).has_value()) << f.agent->Log();
  f.coord.Pump(200);
  f.coord.Send(MakePreempt("job-r", 1, 30000));
  const std::string record = f.work + "/jobs/job-r/attempt-1/task.json";
  for (int i = 0; i < 100 && ReadText(record).find("preempt_deadline_wall_ms") == std::string::npos; ++i) {
    f.coord.Pump(20);
  }
  ASSERT_NE(ReadText(record).find("preempt_deadline_wall_ms"), std::string::npos) << f.agent->Log();
  ::kill(f.agent->pid, SIGKILL);
  EXPECT_EQ(f.agent->Wait(5000), 128 + SIGKILL);

  f.Start();
  auto done = f.coord.WaitFor(TaskStateIs("job-r", pb::TASK_PREEMPTED), 15000);
  ASSERT_TRUE(done.has_value()) << f.agent->Log();
  EXPECT_EQ(done->task_update().status().exit_code(), 75);
  EXPECT_EQ(done->task_update().status().signal(), 0);
  EXPECT_EQ(f.coord.registrations.back().running_tasks_size(), 1);
  int st;
  while (::waitpid(-1, &st, WNOHANG) > 0) {
  }
}

}  // namespace
}  // namespace anneal::agent::testing
