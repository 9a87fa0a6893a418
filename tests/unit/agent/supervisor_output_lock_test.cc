// A launch whose output directory is locked by a stale attempt of the same job waits for the lock instead of
// failing (agent/lifecycle.h, AWAITING_LOCK), edge by edge: it starts once the lock is free, a stop, a preemption
// or a newer epoch ends the wait at once, the wait is bounded, and another job's lock is refused at once. The
// stale holder is a real flock on its own descriptor (what another agent on a shared filesystem holds); retries
// follow the injected clock.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "agent/output_lock.h"
#include "agent/supervisor.h"
#include "protocol/states.h"
#include "supervisor_fixture.h"

namespace anneal::agent {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSleeper = "#!/bin/sh\nexec sleep 30\n";

// A stale attempt's hold on <out>/.anneal-lock, as another agent takes it: its own descriptor (close to release).
int HoldLock(const std::string& out, const std::string& job, uint64_t epoch) {
  fs::create_directories(out);
  // As the agent leaves it: the ranks' user (nobody, when the test runs as root) owns the output directory.
  if (::geteuid() == 0 && ::chown(out.c_str(), 65534, 65534) != 0) return -1;
  auto fd = LockOutputDir(out, job, epoch);
  EXPECT_TRUE(fd.ok()) << fd.status().message();
  return fd.ok() ? *fd : -1;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pb::LaunchTask Writing(const std::string& out, const std::string& job, uint64_t epoch) {
  pb::LaunchTask l = OneRank(job, epoch);
  l.set_output_dir(out);
  return l;
}

// Advances the injected clock by `ms` in steps of `step`, ticking after each.
void AdvanceAndTick(Fixture& f, int64_t ms, int64_t step = 500) {
  for (int64_t done = 0; done < ms; done += step) {
    f.clock.Advance(step);
    f.Spin(1);
  }
}

bool RankLogExists(const Fixture& f, const std::string& job) {
  return fs::exists(f.dir + "/work/jobs/" + job + "/attempt-1/rank-0.log");
}

TEST(OutputLockHolder, TheRefusalReturnsTheHoldersRecord) {
  char tmpl[] = "/tmp/anneal-lock-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto held = LockOutputDir(dir, "job-a", 3);
  ASSERT_TRUE(held.ok()) << held.status().message();
  OutputLockHolder holder;
  auto refused = LockOutputDir(dir, "job-a", 4, &holder);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(holder.job_id, "job-a");
  EXPECT_TRUE(holder.epoch_known);
  EXPECT_EQ(holder.epoch, 3u);
  EXPECT_EQ(holder.agent_pid, std::to_string(::getpid()));
  EXPECT_TRUE(holder.IsOlderEpochOf("job-a", 4));
  EXPECT_FALSE(holder.IsOlderEpochOf("job-a", 3)) << "the same epoch is no stale attempt";
  EXPECT_FALSE(holder.IsOlderEpochOf("job-a", 2)) << "a newer holder makes the launch the stale one";
  EXPECT_FALSE(holder.IsOlderEpochOf("job-b", 9)) << "another job";
  ::close(*held);
  // A record that is not "<job> <epoch> <pid>" is never taken for a stale attempt.
  const int planted = ::open((dir + "/.anneal-lock").c_str(), O_RDWR);
  ASSERT_GE(planted, 0);
  ASSERT_EQ(::ftruncate(planted, 0), 0);
  ASSERT_EQ(::pwrite(planted, "job-a x 1\n", 10, 0), 10);
  ASSERT_EQ(::flock(planted, LOCK_EX | LOCK_NB), 0);
  OutputLockHolder garbled;
  auto refused_again = LockOutputDir(dir, "job-a", 4, &garbled);
  ASSERT_FALSE(refused_again.ok());
  EXPECT_FALSE(garbled.epoch_known);
  EXPECT_FALSE(garbled.IsOlderEpochOf("job-a", 4));
  EXPECT_NE(refused_again.status().message().find("locked by job job-a epoch ?"), std::string::npos)
      << refused_again.status().message();
  ::close(planted);
  fs::remove_all(dir);
}

TEST(SupervisorOutputLock, AStaleEpochsLockMakesTheLaunchWaitThenStartsOnceItIsFree) {
  Fixture f(kSleeper);
  const std::string out = f.dir + "/out";
  const int stale = HoldLock(out, "job", 1);
  ASSERT_GE(stale, 0);
  f.sup->Launch(Writing(out, "job", 2));
  // LAUNCHING -> AWAITING_LOCK: nothing reported as ended, the task listed as launching (heartbeats), no rank.
  EXPECT_EQ(f.Find(pb::TASK_FAILED), nullptr) << f.Find(pb::TASK_FAILED)->message();
  EXPECT_EQ(f.Find(pb::TASK_RUNNING), nullptr);
  auto tasks = f.sup->Tasks();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].state(), pb::TASK_LAUNCHING);
  EXPECT_EQ(tasks[0].epoch(), 2u);
  EXPECT_EQ(tasks[0].pids_size(), 0);
  EXPECT_NE(tasks[0].message().find("locked by job job epoch 1"), std::string::npos) << tasks[0].message();
  EXPECT_FALSE(f.sup->Idle());
  // AWAITING_LOCK -> AWAITING_LOCK while it stays held (a minute of retries).
  AdvanceAndTick(f, 60000, 1000);
  EXPECT_EQ(f.Find(pb::TASK_RUNNING), nullptr);
  EXPECT_EQ(f.Find(pb::TASK_FAILED), nullptr);
  EXPECT_FALSE(RankLogExists(f, "job")) << "a rank started while the stale attempt held the lock";
  EXPECT_EQ(Slurp(out + "/.anneal-lock").rfind("job 1 ", 0), 0u) << Slurp(out + "/.anneal-lock");
  // The stale attempt ends: the next retry (within a second on the clock, not before it) takes the lock.
  ::close(stale);
  f.Spin(1);
  EXPECT_EQ(f.Find(pb::TASK_RUNNING), nullptr) << "retried before its retry time";
  AdvanceAndTick(f, 1000);
  const pb::TaskStatus* running = f.Find(pb::TASK_RUNNING);
  ASSERT_NE(running, nullptr);
  EXPECT_EQ(running->epoch(), 2u);
  EXPECT_EQ(running->pids_size(), 1);
  EXPECT_TRUE(running->message().empty()) << running->message();
  EXPECT_EQ(Slurp(out + "/.anneal-lock").rfind("job 2 ", 0), 0u) << Slurp(out + "/.anneal-lock");
}

TEST(SupervisorOutputLock, AStopDuringTheWaitEndsItAtOnceAndNoRankEverRuns) {
  Fixture f(kSleeper);
  const std::string out = f.dir + "/out";
  const int stale = HoldLock(out, "job", 1);
  f.sup->Launch(Writing(out, "job", 2));
  ASSERT_EQ(f.sup->Tasks().size(), 1u);
  pb::StopTask stop;
  stop.set_job_id("job");
  stop.set_epoch(2);
  stop.set_grace_ms(10000);
  f.sup->Stop(stop);
  // AWAITING_LOCK -> ENDED [STOPPED], without waiting for the grace or the lock.
  const pb::TaskStatus* stopped = f.Find(pb::TASK_STOPPED);
  ASSERT_NE(stopped, nullptr);
  EXPECT_EQ(stopped->epoch(), 2u);
  EXPECT_NE(stopped->message().find("while waiting for the output lock; no rank ran"), std::string::npos)
      << stopped->message();
  EXPECT_TRUE(f.sup->Tasks().empty());
  EXPECT_TRUE(f.sup->Idle());
  ::close(stale);
  AdvanceAndTick(f, 3000);
  EXPECT_EQ(f.Find(pb::TASK_RUNNING), nullptr) << "the stopped launch started when the lock came free";
  EXPECT_FALSE(RankLogExists(f, "job"));
  // The supervisor still serves: the next epoch, with the lock free, runs.
  f.sup->Launch(Writing(out, "job", 3));
  ASSERT_NE(f.Find(pb::TASK_RUNNING), nullptr);
  EXPECT_EQ(f.Find(pb::TASK_RUNNING)->epoch(), 3u);
}

TEST(SupervisorOutputLock, APreemptionDuringTheWaitEndsItPreemptedAtOnce) {
  Fixture f(kSleeper);
  const std::string out = f.dir + "/out";
  const int stale = HoldLock(out, "job", 1);
  f.sup->Launch(Writing(out, "job", 2));
  pb::PreemptTask preempt;
  preempt.set_job_id("job");
  preempt.set_epoch(2);
  preempt.set_grace_ms(30000);
  preempt.set_reason("a higher-priority job");
  f.sup->Preempt(preempt);
  // AWAITING_LOCK -> ENDED [PREEMPTED]: nothing to checkpoint, the coordinator resumes from the last checkpoint.
  const pb::TaskStatus* preempted = f.Find(pb::TASK_PREEMPTED);
  ASSERT_NE(preempted, nullptr);
  EXPECT_EQ(preempted->exit_code(), protocol::kPreemptedExitCode);
  EXPECT_NE(preempted->message().find("a higher-priority job"), std::string::npos) << preempted->message();
  EXPECT_NE(preempted->message().find("no rank ran"), std::string::npos) << preempted->message();
  EXPECT_TRUE(f.sup->Idle());
  ::close(stale);
}

TEST(SupervisorOutputLock, ANewerEpochEndsTheWaitAndWaitsInItsPlace) {
  Fixture f(kSleeper);
  const std::string out = f.dir + "/out";
  const int stale = HoldLock(out, "job", 1);
  f.sup->Launch(Writing(out, "job", 2));
  f.sup->Launch(Writing(out, "job", 3));
  const pb::TaskStatus* superseded = f.Find(pb::TASK_STOPPED);
  ASSERT_NE(superseded, nullptr);
  EXPECT_EQ(superseded->epoch(), 2u);
  EXPECT_NE(superseded->message().find("superseded by epoch 3"), std::string::npos) << superseded->message();
  auto tasks = f.sup->Tasks();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].epoch(), 3u);
  EXPECT_EQ(tasks[0].state(), pb::TASK_LAUNCHING);
  ::close(stale);
  AdvanceAndTick(f, 1000);
  ASSERT_NE(f.Find(pb::TASK_RUNNING), nullptr);
  EXPECT_EQ(f.Find(pb::TASK_RUNNING)->epoch(), 3u);
}

TEST(SupervisorOutputLock, TheWaitIsBoundedAndItsFailureNamesTheHolderAndTheWait) {
  Fixture f(kSleeper);
  f.options.output_lock_wait_ms = 5000;
  f.sup = f.NewSupervisor();
  const std::string out = f.dir + "/out";
  const int stale = HoldLock(out, "job", 1);
  f.sup->Launch(Writing(out, "job", 2));
  AdvanceAndTick(f, 4500);
  EXPECT_EQ(f.Find(pb::TASK_FAILED), nullptr) << "failed before the bound";
  ASSERT_EQ(f.sup->Tasks().size(), 1u);
  AdvanceAndTick(f, 500);
  // AWAITING_LOCK -> ENDED [FAILED] at the bound.
  const pb::TaskStatus* failed = f.Find(pb::TASK_FAILED);
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->epoch(), 2u);
  for (const char* part : {"locked by job job epoch 1", "waited 5 s", "--output-lock-wait-ms 5000"}) {
    EXPECT_NE(failed->message().find(part), std::string::npos) << part << " not in: " << failed->message();
  }
  EXPECT_TRUE(f.sup->Idle());
  EXPECT_FALSE(RankLogExists(f, "job"));
  // The supervisor still serves once the stale attempt is gone.
  ::close(stale);
  f.sup->Launch(Writing(out, "job", 3));
  EXPECT_NE(f.Find(pb::TASK_RUNNING), nullptr);
}

TEST(SupervisorOutputLock, AnotherJobsOrANewerEpochsLockIsRefusedAtOnce) {
  Fixture f(kSleeper);
  const std::string out = f.dir + "/out";
  for (const auto& [holder_job, holder_epoch] :
       std::vector<std::pair<std::string, uint64_t>>{{"other", 7}, {"job", 9}}) {
    f.reports.clear();
    const int held = HoldLock(out, holder_job, holder_epoch);
    ASSERT_GE(held, 0);
    const uint64_t epoch = holder_job == "other" ? 2 : 3;
    f.sup->Launch(Writing(out, "job", epoch));
    // LAUNCHING -> ENDED [FAILED]: not a stale attempt of this job, so nothing to wait for.
    const pb::TaskStatus* refused = f.Find(pb::TASK_FAILED);
    ASSERT_NE(refused, nullptr) << holder_job;
    const std::string named = "locked by job " + holder_job + " epoch " + std::to_string(holder_epoch);
    EXPECT_NE(refused->message().find(named), std::string::npos) << refused->message();
    EXPECT_TRUE(f.sup->Tasks().empty());
    ::close(held);
  }
  // Still serving: with the lock free, the next epoch runs.
  f.reports.clear();
  f.sup->Launch(Writing(out, "job", 4));
  EXPECT_NE(f.Find(pb::TASK_RUNNING), nullptr);
}

TEST(SupervisorOutputLock, AShutdownEndsTheWaitAtOnce) {
  Fixture f(kSleeper);
  const std::string out = f.dir + "/out";
  const int stale = HoldLock(out, "job", 1);
  f.sup->Launch(Writing(out, "job", 2));
  f.sup->StopAll(10000, "agent shutdown");
  const pb::TaskStatus* stopped = f.Find(pb::TASK_STOPPED);
  ASSERT_NE(stopped, nullptr);
  EXPECT_NE(stopped->message().find("agent shutdown"), std::string::npos) << stopped->message();
  EXPECT_TRUE(f.sup->Idle());
  ::close(stale);
}

}  // namespace
}  // namespace anneal::agent
