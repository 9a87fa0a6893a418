// Supervisor in-process with real rank processes (shell scripts) and the injected FakeClock: the SIGKILL
// comes exactly when the clock passes the grace period, not before; launch failures are reported.
#include "agent/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/process.h"
#include "agent/task_cgroup.h"
#include "supervisor_fixture.h"

namespace anneal::agent {
namespace {

TEST(Supervisor, SigkillComesWhenTheInjectedClockPassesTheGracePeriod) {
  Fixture f("#!/bin/sh\ntrap '' TERM\necho \"rank $RANK up\"\nexec sleep 30\n");
  f.sup->Launch(OneRank("j", 1));
  const pb::TaskStatus* running = f.Find(pb::TASK_RUNNING);
  ASSERT_NE(running, nullptr);
  const pid_t pid = running->pids(0);
  // Stop only once the script ignores SIGTERM (its trap ran before it logged).
  const std::string log = f.dir + "/work/jobs/j/attempt-1/rank-0.log";
  for (int i = 0; i < 300; ++i) {
    std::ifstream in(log);
    std::string line;
    if (std::getline(in, line) && line == "rank 0 up") break;
    f.Spin(10);
  }

  pb::StopTask stop;
  stop.set_job_id("j");
  stop.set_epoch(1);
  stop.set_grace_ms(5000);
  f.sup->Stop(stop);
  for (int i = 0; i < 30; ++i) f.Spin(10);  // 300 ms of real time, 0 ms on the injected clock
  EXPECT_TRUE(ProcessAlive(pid, 0)) << "killed before the grace period ended";
  EXPECT_EQ(f.Find(pb::TASK_STOPPED), nullptr);
  f.clock.Advance(4999);
  f.Spin(50);
  EXPECT_TRUE(ProcessAlive(pid, 0));
  f.clock.Advance(1);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_STOPPED, 3000));
  EXPECT_NE(f.Find(pb::TASK_STOPPED)->message().find("killed by signal 9"), std::string::npos)
      << f.Find(pb::TASK_STOPPED)->message();
  EXPECT_FALSE(ProcessAlive(pid, 0));
  EXPECT_TRUE(f.sup->Idle());
}

TEST(Supervisor, MissingTrainerFailsTheLaunchWithTheProgramNamed) {
  Fixture f("");
  f.sup->Launch(OneRank("j", 1));
  const pb::TaskStatus* failed = f.Find(pb::TASK_FAILED);
  ASSERT_NE(failed, nullptr);
  EXPECT_NE(failed->message().find("missing-trainer"), std::string::npos) << failed->message();
  EXPECT_TRUE(f.sup->Idle());
}

TEST(Supervisor, SlotOutOfRangeAndBadJobIdAreRefused) {
  Fixture f("#!/bin/sh\nexit 0\n");
  auto l = OneRank("j", 1);
  l.mutable_ranks(0)->set_slot(5);
  f.sup->Launch(l);
  const pb::TaskStatus* failed = f.Find(pb::TASK_FAILED);
  ASSERT_NE(failed, nullptr);
  EXPECT_NE(failed->message().find("slot 5"), std::string::npos) << failed->message();
  f.reports.clear();
  f.sup->Launch(OneRank("../escape", 1));
  ASSERT_NE(f.Find(pb::TASK_FAILED), nullptr);
  EXPECT_FALSE(std::filesystem::exists(f.dir + "/escape"));
}

TEST(Supervisor, ExitCodesDecideTheFinalState) {
  Fixture f("#!/bin/sh\nexit $EXIT_WITH\n");
  auto ok = OneRank("ok", 1);
  (*ok.mutable_env())["EXIT_WITH"] = "0";
  f.sup->Launch(ok);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_SUCCEEDED, 3000));
  auto bad = OneRank("bad", 1);
  (*bad.mutable_env())["EXIT_WITH"] = "7";
  f.sup->Launch(bad);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_FAILED, 3000));
  EXPECT_EQ(f.Find(pb::TASK_FAILED)->exit_code(), 7);
  EXPECT_EQ(f.Find(pb::TASK_FAILED)->job_id(), "bad");
}

TEST(Supervisor, RotatesALargeRankLogOnTheClock) {
  Fixture f("#!/bin/sh\nhead -c 5000 /dev/zero | tr '\\0' x\necho\necho tail-line\nexec sleep 30\n", {}, 1000);
  f.Spin(0);  // the first rotation check happens now, before the rank writes; the next one is 1000 ms away
  f.sup->Launch(OneRank("big", 1));
  const std::string log = f.dir + "/work/jobs/big/attempt-1/rank-0.log";
  for (int i = 0; i < 300 && !(std::filesystem::exists(log) && std::filesystem::file_size(log) >= 5011); ++i)
    f.Spin(10);
  f.clock.Advance(1000);  // the rotation check is due
  f.Spin(10);
  ASSERT_TRUE(std::filesystem::exists(log + ".1"));
  EXPECT_EQ(std::filesystem::file_size(log + ".1"), 5011u);
  EXPECT_EQ(std::filesystem::file_size(log), 0u);
  pb::FetchLogs fetch;
  fetch.set_job_id("big");
  fetch.set_offset(5001);
  const pb::LogChunk chunk = f.sup->FetchLogs(fetch);
  EXPECT_EQ(chunk.data(), "tail-line\n");
  EXPECT_FALSE(chunk.eof());
}

TEST(Supervisor, GpuNodesGetCudaVisibleDevicesInLocalRankOrder) {
  Fixture f("#!/bin/sh\necho \"devices=$CUDA_VISIBLE_DEVICES local=$LOCAL_RANK\"\n", {0, 1});
  pb::LaunchTask l = OneRank("g", 1);
  l.mutable_ranks(0)->set_slot(1);
  auto* r1 = l.add_ranks();
  r1->set_global_rank(1);
  r1->set_local_rank(1);
  r1->set_slot(0);
  l.set_world_size(2);
  f.sup->Launch(l);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_SUCCEEDED, 3000));
  std::ifstream log(f.dir + "/work/jobs/g/attempt-1/rank-0.log");
  std::string line;
  std::getline(log, line);
  EXPECT_EQ(line, "devices=1,0 local=0");
}

TEST(Supervisor, PrunesOldRankLogsButKeepsTaskRecords) {
  namespace fs = std::filesystem;
  Fixture f("#!/bin/sh\nexit 0\n");
  const fs::path old_dir = fs::path(f.dir) / "work/jobs/job-old/attempt-1";
  const fs::path new_dir = fs::path(f.dir) / "work/jobs/job-new/attempt-1";
  for (const auto& d : {old_dir, new_dir}) {
    fs::create_directories(d);
    for (const char* name : {"rank-0.log", "rank-0.log.1", "config.yaml", "task.json"}) std::ofstream(d / name) << "x";
  }
  // The fake clock's "now": the old attempt's files were written 8 days before it, the new one's 1 hour before.
  const auto now = std::chrono::file_clock::from_sys(
      std::chrono::system_clock::time_point(std::chrono::milliseconds(f.clock.WallMs())));
  for (const auto& e : fs::directory_iterator(old_dir)) fs::last_write_time(e.path(), now - std::chrono::hours(24 * 8));
  for (const auto& e : fs::directory_iterator(new_dir)) fs::last_write_time(e.path(), now - std::chrono::hours(1));
  f.Spin(0);
  EXPECT_FALSE(fs::exists(old_dir / "rank-0.log"));
  EXPECT_FALSE(fs::exists(old_dir / "rank-0.log.1"));
  EXPECT_FALSE(fs::exists(old_dir / "config.yaml"));
  EXPECT_TRUE(fs::exists(old_dir / "task.json"));  // epoch fencing still knows the job
  for (const char* name : {"rank-0.log", "rank-0.log.1", "config.yaml", "task.json"}) {
    EXPECT_TRUE(fs::exists(new_dir / name)) << name;
  }
}

}  // namespace
}  // namespace anneal::agent

namespace anneal::agent {
namespace {

std::string RankLog(const Fixture& f, const std::string& job) {
  std::ifstream in(f.dir + "/work/jobs/" + job + "/attempt-1/rank-0.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(SupervisorConfinement, TheRankSeesTheAllowListAndTheJobsVariablesNeverTheAgentsSecrets) {
  ::setenv("ANNEAL_AGENT_SECRET", "s3cret-value", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value", 1);
  ::setenv("LC_MESSAGES", "C", 1);
  Fixture f("#!/bin/sh\nenv\necho uid=$(id -u)\n");
  auto l = OneRank("envjob", 1);
  (*l.mutable_env())["JOB_VARIABLE"] = "from-the-job";
  f.sup->Launch(l);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_SUCCEEDED, 5000)) << RankLog(f, "envjob");
  const std::string log = RankLog(f, "envjob");
  EXPECT_EQ(log.find("s3cret-value"), std::string::npos) << log;
  EXPECT_EQ(log.find("aws-secret-value"), std::string::npos) << log;
  EXPECT_NE(log.find("JOB_VARIABLE=from-the-job"), std::string::npos) << log;
  EXPECT_NE(log.find("LC_MESSAGES=C"), std::string::npos) << log;
  EXPECT_NE(log.find("PATH="), std::string::npos) << log;
  EXPECT_NE(log.find("RANK=0"), std::string::npos) << log;
  EXPECT_NE(log.find("HOME=" + f.dir + "/work/jobs/envjob/attempt-1/home"), std::string::npos) << log;
  if (::geteuid() == 0) {
    EXPECT_NE(log.find("uid=65534"), std::string::npos) << "a root agent's rank must run as nobody: " << log;
    EXPECT_EQ(log.find("uid=0"), std::string::npos) << log;
  }
  ::unsetenv("ANNEAL_AGENT_SECRET");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
}

TEST(SupervisorConfinement, AnOutputDirectoryHeldByARunningJobRefusesAnotherLaunch) {
  Fixture f("#!/bin/sh\nexec sleep 30\n");
  const std::string out = f.dir + "/out";
  auto first = OneRank("first", 1);
  first.set_output_dir(out);
  f.sup->Launch(first);
  ASSERT_NE(f.Find(pb::TASK_RUNNING), nullptr);
  if (::geteuid() == 0) {
    struct stat st {};
    ASSERT_EQ(::stat(out.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u) << "the agent gives the output directory it created to the rank's user";
  }
  auto second = OneRank("second", 1);
  second.set_output_dir(out);
  f.sup->Launch(second);
  const pb::TaskStatus* refused = f.Find(pb::TASK_FAILED);
  ASSERT_NE(refused, nullptr);
  EXPECT_EQ(refused->job_id(), "second");
  EXPECT_NE(refused->message().find("locked by job first epoch 1"), std::string::npos) << refused->message();
  // Once the first job ended the directory is free.
  pb::StopTask stop;
  stop.set_job_id("first");
  stop.set_epoch(1);
  f.sup->Stop(stop);
  ASSERT_TRUE(f.SpinUntil(pb::TASK_STOPPED, 3000));
  f.reports.clear();
  auto third = OneRank("third", 1);
  third.set_output_dir(out);
  f.sup->Launch(third);
  EXPECT_NE(f.Find(pb::TASK_RUNNING), nullptr);
}

TEST(SupervisorConfinement, OutputRootsAreCheckedAgainOnTheNodesFilesystem) {
  Fixture f("#!/bin/sh\nexit 0\n");
  std::filesystem::create_directories(f.dir + "/roots/team");
  std::filesystem::create_directories(f.dir + "/elsewhere");
  std::filesystem::create_directory_symlink(f.dir + "/elsewhere", f.dir + "/roots/team/escape");
  auto l = OneRank("escaper", 1);
  l.set_team("nlp");
  l.add_output_roots(f.dir + "/roots/team");
  l.set_output_dir(f.dir + "/roots/team/escape/run");
  f.sup->Launch(l);
  const pb::TaskStatus* failed = f.Find(pb::TASK_FAILED);
  ASSERT_NE(failed, nullptr);
  EXPECT_NE(failed->message().find("outside the outputs roots of team 'nlp'"), std::string::npos) << failed->message();
  EXPECT_NE(failed->message().find("resolves to " + f.dir + "/elsewhere/run"), std::string::npos) << failed->message();
  EXPECT_FALSE(std::filesystem::exists(f.dir + "/elsewhere/run")) << "nothing is created outside the roots";
}

TEST(SupervisorConfinement, AStopKillsTheWholeTaskCgroup) {
  auto base = TaskCgroupBase();
  if (!base.ok()) GTEST_SKIP() << "cgroup v2 is not writable here: " << base.status().message();
  Fixture f("#!/bin/sh\nsetsid sleep 60 &\necho $! > $HOME/daemon.pid\nexec sleep 60\n", {}, 64 << 20, *base);
  f.sup->Launch(OneRank("cg", 1));
  ASSERT_NE(f.Find(pb::TASK_RUNNING), nullptr);
  const std::string pid_file = f.dir + "/work/jobs/cg/attempt-1/home/daemon.pid";
  pid_t daemon = 0;
  for (int i = 0; i < 300 && daemon == 0; ++i) {
    std::ifstream(pid_file) >> daemon;
    f.Spin(10);
  }
  ASSERT_GT(daemon, 0);
  EXPECT_TRUE(ProcessAlive(daemon, 0));
  pb::StopTask stop;
  stop.set_job_id("cg");
  stop.set_epoch(1);
  f.sup->Stop(stop);  // grace 0: SIGKILL and cgroup.kill
  ASSERT_TRUE(f.SpinUntil(pb::TASK_STOPPED, 3000));
  for (int i = 0; i < 300 && ProcessAlive(daemon, 0); ++i) f.Spin(10);
  EXPECT_FALSE(ProcessAlive(daemon, 0)) << "the daemon escaped its process group but not the cgroup";
  for (int i = 0; i < 300; ++i) f.Spin(10);
  bool leftover = false;
  for (const auto& e : std::filesystem::directory_iterator(*base)) {
    leftover = leftover || e.path().filename().string().find("anneal-n-cg-e1-") == 0;
  }
  EXPECT_FALSE(leftover) << "the task cgroup is removed once empty";
}

}  // namespace
}  // namespace anneal::agent

namespace anneal::agent {
namespace {

TEST(SupervisorConfinement, EventsStillFlowFromAConfinedRank) {
  const std::string script =
      "#!/bin/sh\necho '{\"type\":\"finished\",\"rank\":0,\"time_ms\":1,\"status\":\"ok\",\"message\":\"adapter "
      "written\"}' >&3\n";
  auto base = TaskCgroupBase();
  Fixture f(script, {}, 64 << 20, base.ok() ? *base : "");
  f.sup->Launch(OneRank("ev", 1));
  ASSERT_TRUE(f.SpinUntil(pb::TASK_SUCCEEDED, 3000));
  EXPECT_EQ(f.Find(pb::TASK_SUCCEEDED)->message(), "adapter written");
}

}  // namespace
}  // namespace anneal::agent
