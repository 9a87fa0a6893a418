// Preemption in the Supervisor (agent/lifecycle.h, PREEMPTING), edge by edge with real rank processes (shell
// scripts) and the injected FakeClock: SIGUSR1 reaches the rank's own pid, exit 75 ends TASK_PREEMPTED, a rank
// ignoring it is SIGKILLed exactly at the deadline, another exit code fails the task, a stop still stops, stale
// and repeated orders change nothing, and a restarted supervisor finishes a preemption it re-adopts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include "agent/process.h"
#include "agent/task_record.h"
#include "protocol/states.h"
#include "supervisor_fixture.h"

namespace anneal::agent {
namespace {

// A rank that announces "up" once its SIGUSR1 trap is set, then waits (killable by SIGTERM).
std::string RankScript(const std::string& on_usr1) {
  return "#!/bin/sh\ntrap '" + on_usr1 + "' USR1\necho up\nwhile true; do sleep 0.02; done\n";
}

pb::PreemptTask Preempt(const std::string& job, uint64_t epoch, uint32_t grace_ms) {
  pb::PreemptTask p;
  p.set_job_id(job);
  p.set_epoch(epoch);
  p.set_grace_ms(grace_ms);
  p.set_reason("team b reclaims its guarantee");
  return p;
}

pid_t LaunchAndWaitUp(Fixture& f, const std::string& job) {
  f.sup->Launch(OneRank(job, 1));
  const pb::TaskStatus* running = f.Find(pb::TASK_RUNNING);
  EXPECT_NE(running, nullptr);
  EXPECT_TRUE(f.WaitForFirstLogLine(job, "up"));
  return running != nullptr ? running->pids(0) : -1;
}

TEST(SupervisorPreempt, ARankExiting75EndsTaskPreempted) {
  Fixture f(RankScript("exit 75"));
  LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 60000));
  ASSERT_TRUE(f.SpinUntil(pb::TASK_PREEMPTED, 5000));
  const pb::TaskStatus* s = f.Find(pb::TASK_PREEMPTED);
  EXPECT_EQ(s->exit_code(), protocol::kPreemptedExitCode);
  EXPECT_EQ(s->signal(), 0);
  EXPECT_NE(s->message().find("preempted (team b reclaims its guarantee): rank 0 exited with code 75"),
            std::string::npos)
      << s->message();
  EXPECT_EQ(f.Find(pb::TASK_FAILED), nullptr);
  EXPECT_TRUE(f.sup->Idle());
  // The record is final: a restarted agent reports it again instead of re-adopting anything.
  auto rec = ReadTaskRecord(f.dir + "/work/jobs/j/attempt-1");
  ASSERT_TRUE(rec.ok());
  EXPECT_TRUE(rec->final);
  EXPECT_EQ(rec->state, pb::TASK_PREEMPTED);
  EXPECT_EQ(rec->preempt_deadline_wall_ms, 0);
}

TEST(SupervisorPreempt, ARankIgnoringSigusr1IsKilledExactlyAtTheDeadline) {
  Fixture f("#!/bin/sh\ntrap '' USR1 TERM\necho up\nexec sleep 30\n");
  const pid_t pid = LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 5000));
  for (int i = 0; i < 30; ++i) f.Spin(10);  // 300 ms of real time, 0 ms on the injected clock
  f.clock.Advance(4999);
  f.Spin(50);
  EXPECT_TRUE(ProcessAlive(pid, 0)) << "killed before the deadline";
  EXPECT_EQ(f.Find(pb::TASK_PREEMPTED), nullptr);
  f.clock.Advance(1);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_PREEMPTED, 3000));
  const pb::TaskStatus* s = f.Find(pb::TASK_PREEMPTED);
  EXPECT_EQ(s->signal(), SIGKILL);
  EXPECT_EQ(s->exit_code(), 128 + SIGKILL);
  EXPECT_NE(s->message().find("killed by signal 9"), std::string::npos) << s->message();
  EXPECT_FALSE(ProcessAlive(pid, 0));
}

TEST(SupervisorPreempt, AnotherExitCodeDuringTheGraceFailsTheTask) {
  Fixture f(RankScript("exit 3"));
  LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 60000));
  ASSERT_TRUE(f.SpinUntil(pb::TASK_FAILED, 5000));
  EXPECT_EQ(f.Find(pb::TASK_FAILED)->exit_code(), 3);
  for (int i = 0; i < 10; ++i) f.Spin(10);
  EXPECT_EQ(f.Find(pb::TASK_PREEMPTED), nullptr);
  EXPECT_TRUE(f.sup->Idle());
}

TEST(SupervisorPreempt, EveryRankExiting0StillSucceeds) {
  Fixture f(RankScript("exit 0"));
  LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 60000));
  ASSERT_TRUE(f.SpinUntil(pb::TASK_SUCCEEDED, 5000));
  EXPECT_EQ(f.Find(pb::TASK_PREEMPTED), nullptr);
}

TEST(SupervisorPreempt, AStaleOrNewerEpochOrUnknownJobIsIgnored) {
  Fixture f(RankScript("exit 75"));
  const pid_t pid = LaunchAndWaitUp(f, "j");
  auto newer = OneRank("j", 2);  // epoch 2 replaces epoch 1...
  newer.set_attempt(2);
  f.sup->Launch(newer);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_STOPPED, 3000));  // ...which is superseded
  f.reports.clear();
  f.sup->Preempt(Preempt("j", 1, 0));      // the old epoch
  f.sup->Preempt(Preempt("j", 3, 0));      // an epoch never launched here
  f.sup->Preempt(Preempt("other", 2, 0));  // a job never launched here
  for (int i = 0; i < 30; ++i) f.Spin(10);
  EXPECT_TRUE(f.reports.empty());
  ASSERT_EQ(f.sup->Tasks().size(), 1u);
  EXPECT_EQ(f.sup->Tasks()[0].epoch(), 2u);
  EXPECT_EQ(f.sup->Tasks()[0].state(), pb::TASK_RUNNING);
  EXPECT_FALSE(ProcessAlive(pid, 0));  // epoch 1's rank; epoch 2's is still running
}

TEST(SupervisorPreempt, ARepeatedOrderKeepsTheFirstDeadline) {
  Fixture f("#!/bin/sh\ntrap '' USR1 TERM\necho up\nexec sleep 30\n");
  const pid_t pid = LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 5000));
  f.clock.Advance(3000);
  f.Spin(10);
  f.sup->Preempt(Preempt("j", 1, 5000));  // would move the deadline to 8000 if it were not idempotent
  f.clock.Advance(1999);
  f.Spin(50);
  EXPECT_TRUE(ProcessAlive(pid, 0));
  f.clock.Advance(1);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_PREEMPTED, 3000));
  EXPECT_EQ(f.Find(pb::TASK_PREEMPTED)->signal(), SIGKILL);
}

TEST(SupervisorPreempt, AStopDuringPreemptionStillStops) {
  Fixture f(RankScript(""));  // an empty trap action: SIGUSR1 is handled and ignored; SIGTERM kills
  LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 60000));
  for (int i = 0; i < 10; ++i) f.Spin(10);
  pb::StopTask stop;
  stop.set_job_id("j");
  stop.set_epoch(1);
  stop.set_grace_ms(60000);
  f.sup->Stop(stop);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_STOPPED, 5000));
  EXPECT_EQ(f.Find(pb::TASK_PREEMPTED), nullptr);
  // A preempt order after the stop changes nothing.
  f.sup->Preempt(Preempt("j", 1, 0));
  EXPECT_TRUE(f.sup->Idle());
}

TEST(SupervisorPreempt, ARestartedSupervisorKeepsTheDeadlineOfAReadoptedPreemption) {
  Fixture f("#!/bin/sh\ntrap '' USR1 TERM\necho up\nexec sleep 30\n");
  const pid_t pid = LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 5000));
  f.clock.Advance(2000);
  f.Spin(10);
  auto rec = ReadTaskRecord(f.dir + "/work/jobs/j/attempt-1");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->preempt_deadline_wall_ms, f.clock.WallMs() + 3000);
  f.sup->Detach();  // the agent goes away, the rank stays
  f.sup = f.NewSupervisor();
  auto adopted = f.sup->Recover();
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].state(), pb::TASK_RUNNING);
  f.clock.Advance(2999);
  f.Spin(250);  // adopted ranks are polled through /proc every 200 ms
  EXPECT_TRUE(ProcessAlive(pid, 0));
  f.clock.Advance(1);
  f.Spin(10);
  ::waitpid(pid, nullptr, 0);  // the test process is the rank's parent: reap it so /proc shows it gone
  f.clock.Advance(200);        // the next /proc poll
  ASSERT_TRUE(f.SpinUntil(pb::TASK_PREEMPTED, 3000));
  EXPECT_EQ(f.Find(pb::TASK_PREEMPTED)->signal(), SIGKILL);
}

TEST(SupervisorPreempt, ARestartedSupervisorReportsPreemptedWhenTheAdoptedRankSaysSo) {
  // On SIGUSR1 the rank waits, says "preempted" on its event pipe (as anneal-train does) and exits 75.
  Fixture f(
      "#!/bin/sh\n"
      "trap 'sleep 0.5; echo \"{\\\"type\\\":\\\"finished\\\",\\\"rank\\\":0,\\\"time_ms\\\":1,"
      "\\\"status\\\":\\\"preempted\\\"}\" >&3; exit 75' USR1\n"
      "echo up\nwhile true; do sleep 0.02; done\n");
  const pid_t pid = LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 60000));
  f.sup->Detach();
  f.sup = f.NewSupervisor();
  ASSERT_EQ(f.sup->Recover().size(), 1u);
  for (int i = 0; i < 300 && f.Find(pb::TASK_PREEMPTED) == nullptr; ++i) {
    ::waitpid(pid, nullptr, WNOHANG);  // the test process is its parent
    f.clock.Advance(200);
    f.Spin(10);
  }
  const pb::TaskStatus* s = f.Find(pb::TASK_PREEMPTED);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->exit_code(), protocol::kPreemptedExitCode);
  EXPECT_EQ(f.Find(pb::TASK_FAILED), nullptr);
}

TEST(SupervisorPreempt, RanksThatEndedWhileNoAgentRanAfterTheOrderArePreempted) {
  Fixture f(RankScript("sleep 0.3; exit 75"));
  const pid_t pid = LaunchAndWaitUp(f, "j");
  f.sup->Preempt(Preempt("j", 1, 60000));
  f.sup->Detach();
  ::waitpid(pid, nullptr, 0);  // it ends while no supervisor watches
  f.sup = f.NewSupervisor();
  EXPECT_TRUE(f.sup->Recover().empty());
  const pb::TaskStatus* s = f.Find(pb::TASK_PREEMPTED);
  ASSERT_NE(s, nullptr);
  EXPECT_NE(s->message().find("exit status unknown"), std::string::npos) << s->message();
}

}  // namespace
}  // namespace anneal::agent
