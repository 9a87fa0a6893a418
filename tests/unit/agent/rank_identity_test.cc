// Rank confinement primitives with real processes, files and (where writable) cgroups: run-as resolution,
// the environment allow-list, permission checks, Spawn as another user and dying with its parent, the task
// cgroup, the output directory lock.
#include "agent/rank_identity.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/output_lock.h"
#include "agent/process.h"
#include "agent/task_cgroup.h"

namespace anneal::agent {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Dir {
  std::string path;
  Dir() {
    char tmpl[] = "/tmp/anneal-confine-XXXXXX";
    path = ::mkdtemp(tmpl);
    ::chmod(path.c_str(), 0755);  // ranks running as another user must reach it
  }
  ~Dir() { fs::remove_all(path); }
};

bool GoneWithin(pid_t pid, int ms) {
  for (int waited = 0; waited < ms; waited += 10) {
    if (!ProcessAlive(pid, 0)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return !ProcessAlive(pid, 0);
}

TEST(RunAs, ResolvesNamesAndNumbersAndRefusesRoot) {
  auto nobody = ResolveRunAs("nobody");
  ASSERT_TRUE(nobody.ok()) << nobody.status().message();
  EXPECT_EQ(nobody->uid, 65534u);
  EXPECT_EQ(nobody->name, "nobody");
  auto numeric = ResolveRunAs("2001:3001");
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(numeric->uid, 2001u);
  EXPECT_EQ(numeric->gid, 3001u);
  EXPECT_EQ(numeric->groups, std::vector<gid_t>{3001});
  for (const char* bad : {"root", "0:0", "2001:0", "0:2001", "no-such-user-anneal", "12:x", ":5", ""}) {
    auto r = ResolveRunAs(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find(std::string("run_as '") + bad + "'"), std::string::npos)
        << r.status().message();
  }
  EXPECT_NE(ResolveRunAs("root").status().message().find("never runs as root"), std::string::npos);
}

TEST(RunAs, MapsTeamsWhenRootAndRunsAsItselfOtherwise) {
  RunAsConfig config;
  config.teams["nlp"] = "2001:2001";
  auto nlp = RankUserFor(config, "nlp", /*agent_is_root=*/true);
  ASSERT_TRUE(nlp.ok());
  ASSERT_TRUE(nlp->has_value());
  EXPECT_EQ((*nlp)->uid, 2001u);
  auto other = RankUserFor(config, "vision", true);
  ASSERT_TRUE(other.ok() && other->has_value());
  EXPECT_EQ((*other)->uid, 65534u);  // the default user, nobody
  auto unprivileged = RankUserFor(config, "nlp", /*agent_is_root=*/false);
  ASSERT_TRUE(unprivileged.ok());
  EXPECT_FALSE(unprivileged->has_value());
  config.teams["bad"] = "root";
  auto bad = RankUserFor(config, "bad", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("team 'bad'"), std::string::npos) << bad.status().message();
}

TEST(RankEnvironment, OnlyTheAllowListPasses) {
  std::vector<std::string> storage = {"PATH=/usr/bin",       "LC_ALL=C.UTF-8",          "NCCL_DEBUG=INFO",
                                      "ANNEAL_TOKEN=s3cret", "AWS_SECRET_ACCESS_KEY=x", "HF_TOKEN=hf_x",
                                      "WANDB_API_KEY=w",     "MY_TEAM_FLAG=1",          "HOME=/root"};
  std::vector<char*> envp;
  for (auto& s : storage) envp.push_back(s.data());
  envp.push_back(nullptr);
  const auto env = AllowedAgentEnvironment(envp.data(), {"MY_TEAM_*"});
  EXPECT_EQ(env.at("PATH"), "/usr/bin");
  EXPECT_EQ(env.at("LC_ALL"), "C.UTF-8");
  EXPECT_EQ(env.at("NCCL_DEBUG"), "INFO");
  EXPECT_EQ(env.at("MY_TEAM_FLAG"), "1");
  for (const char* secret : {"ANNEAL_TOKEN", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "WANDB_API_KEY", "HOME"}) {
    EXPECT_EQ(env.count(secret), 0u) << secret;
  }
}

TEST(RankPermissions, UnreachableAndUnwritableDirectoriesAreNamed) {
  Dir d;
  const RankUser nobody = *ResolveRunAs("65534:65534");
  fs::create_directories(d.path + "/private/inner");
  ::chmod((d.path + "/private").c_str(), 0700);
  Status st = CheckAccessibleBy("output directory", d.path + "/private/inner", nobody, true);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find(d.path + "/private is not searchable"), std::string::npos) << st.message();
  fs::create_directories(d.path + "/rootonly");
  st = CheckAccessibleBy("output directory", d.path + "/rootonly", nobody, true);
  EXPECT_NE(st.message().find("is not writable by nobody (uid 65534"), std::string::npos) << st.message();
  // What MakeDirsOwnedBy creates is the rank's; what existed keeps its owner.
  ASSERT_TRUE(MakeDirsOwnedBy(d.path + "/rootonly/a/b", nobody).ok());
  struct stat st_a {
  }, st_root{};
  ::stat((d.path + "/rootonly/a").c_str(), &st_a);
  ::stat((d.path + "/rootonly").c_str(), &st_root);
  if (::geteuid() == 0) {
    EXPECT_EQ(st_a.st_uid, 65534u);
    EXPECT_EQ(st_root.st_uid, 0u);
    EXPECT_TRUE(CheckAccessibleBy("output directory", d.path + "/rootonly/a/b", nobody, true).ok());
  }
}

TEST(SpawnAs, ARankOfARootAgentRunsAsItsMappedUserAndCannotRegainRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching users needs root";
  Dir d;
  SpawnSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "echo ids $(id -u) $(id -g) $(id -G); echo $HOME"};
  spec.env = {"PATH=/usr/bin:/bin", "HOME=" + d.path};
  spec.cwd = d.path;
  spec.log_path = d.path + "/rank.log";
  spec.switch_user = true;
  spec.uid = 65534;
  spec.gid = 65534;
  spec.groups = {65534};
  auto pid = Spawn(spec);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  int st = 0;
  ASSERT_EQ(::waitpid(*pid, &st, 0), *pid);
  EXPECT_EQ(DecodeWaitStatus(st).exit_code, 0);
  EXPECT_NE(Slurp(spec.log_path).find("ids 65534 65534 65534\n"), std::string::npos) << Slurp(spec.log_path);
  // uid 0 is refused before anything starts.
  spec.uid = 0;
  auto refused = Spawn(spec);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("uid/gid 0"), std::string::npos);
  // A program the user cannot reach: the error says which user and why.
  spec.uid = 65534;
  fs::create_directories(d.path + "/private");
  fs::copy_file("/bin/true", d.path + "/private/trainer");
  ::chmod((d.path + "/private").c_str(), 0700);
  spec.program = d.path + "/private/trainer";
  spec.args.clear();
  auto unreachable = Spawn(spec);
  ASSERT_FALSE(unreachable.ok());
  EXPECT_NE(unreachable.status().message().find("as uid 65534"), std::string::npos) << unreachable.status().message();
}

TEST(SpawnAs, EverythingTogetherKeepsTheEventDescriptor) {
  Dir d;
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  SpawnSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "echo event >&3; id -u"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.cwd = d.path;
  spec.log_path = d.path + "/rank.log";
  spec.events_fd = fds[1];
  spec.die_with_parent = true;
  if (::geteuid() == 0) {
    spec.switch_user = true;
    spec.uid = spec.gid = 65534;
  }
  std::string cg;
  if (auto base = TaskCgroupBase(); base.ok()) {
    cg = *CreateTaskCgroup(*base, "anneal-test-ev-" + std::to_string(::getpid()));
    spec.cgroup_procs = cg + "/cgroup.procs";
  }
  auto pid = Spawn(spec);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  ::close(fds[1]);
  int st = 0;
  ASSERT_EQ(::waitpid(*pid, &st, 0), *pid);
  char buf[64] = {};
  EXPECT_GT(::read(fds[0], buf, sizeof(buf)), 0) << Slurp(spec.log_path);
  EXPECT_EQ(std::string(buf), "event\n") << Slurp(spec.log_path);
  ::close(fds[0]);
  if (!cg.empty()) RemoveTaskCgroup(cg).IgnoreError();
}

TEST(SpawnAs, ARankDiesWithTheProcessThatStartedIt) {
  Dir d;
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t parent = ::fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {  // a stand-in agent: starts a sleeping rank, reports its pid, waits to be killed
    SpawnSpec spec;
    spec.program = "/bin/sleep";
    spec.args = {"60"};
    spec.log_path = d.path + "/rank.log";
    spec.die_with_parent = true;
    auto pid = Spawn(spec);
    const pid_t rank = pid.ok() ? *pid : -1;
    (void)!::write(pipe_fds[1], &rank, sizeof rank);
    ::pause();
    _exit(0);
  }
  ::close(pipe_fds[1]);
  pid_t rank = -1;
  ASSERT_EQ(::read(pipe_fds[0], &rank, sizeof rank), static_cast<ssize_t>(sizeof rank));
  ::close(pipe_fds[0]);
  ASSERT_GT(rank, 0);
  EXPECT_TRUE(ProcessAlive(rank, 0));
  ::kill(parent, SIGKILL);
  int st;
  ::waitpid(parent, &st, 0);
  EXPECT_TRUE(GoneWithin(rank, 3000)) << "the rank outlived its agent";
  if (ProcessAlive(rank, 0)) ::kill(rank, SIGKILL);
}

TEST(TaskCgroup, KillsEverythingInsideWhateverSessionItMovedTo) {
  auto base = TaskCgroupBase();
  if (!base.ok()) GTEST_SKIP() << "cgroup v2 is not writable here: " << base.status().message();
  Dir d;
  auto cg = CreateTaskCgroup(*base, "anneal-test-" + std::to_string(::getpid()));
  ASSERT_TRUE(cg.ok()) << cg.status().message();
  SpawnSpec spec;
  spec.program = "/bin/sh";
  // The rank starts a daemon in a new session (escaping its process group), reports its pid, and waits.
  spec.args = {"-c", "setsid sleep 60 & echo $! > " + d.path + "/daemon.pid; sleep 60"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.log_path = d.path + "/rank.log";
  spec.cgroup_procs = *cg + "/cgroup.procs";
  auto pid = Spawn(spec);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  pid_t daemon = 0;
  for (int i = 0; i < 300 && daemon == 0; ++i) {
    std::ifstream(d.path + "/daemon.pid") >> daemon;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(daemon, 0);
  EXPECT_TRUE(TaskCgroupPopulated(*cg));
  EXPECT_NE(::getsid(daemon), *pid) << "the daemon left the rank's session";
  ASSERT_TRUE(KillTaskCgroup(*cg).ok());
  int st;
  ::waitpid(*pid, &st, 0);
  EXPECT_TRUE(GoneWithin(daemon, 3000)) << "cgroup.kill missed the escaped daemon";
  for (int i = 0; i < 300 && TaskCgroupPopulated(*cg); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(RemoveTaskCgroup(*cg).ok());
  EXPECT_FALSE(fs::exists(*cg));
}

TEST(OutputLock, ASecondAttemptIsRefusedWhileTheFirstHoldsIt) {
  Dir d;
  auto first = LockOutputDir(d.path, "job-a", 3);
  ASSERT_TRUE(first.ok()) << first.status().message();
  for (const auto& [job, epoch] : std::vector<std::pair<std::string, uint64_t>>{{"job-b", 1}, {"job-a", 4}}) {
    auto second = LockOutputDir(d.path, job, epoch);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(second.status().message().find("locked by job job-a epoch 3 (agent pid " + std::to_string(::getpid())),
              std::string::npos)
        << second.status().message();
  }
  ::close(*first);
  auto after = LockOutputDir(d.path, "job-b", 1);
  ASSERT_TRUE(after.ok()) << after.status().message();
  EXPECT_EQ(Slurp(d.path + "/.anneal-lock"), "job-b 1 " + std::to_string(::getpid()) + "\n");
  ::close(*after);
}

TEST(OutputLock, APlantedLockFileIsNeverWrittenThrough) {
  Dir d;
  std::ofstream(d.path + "/precious") << "keep";
  fs::create_symlink(d.path + "/precious", d.path + "/.anneal-lock");
  auto via_symlink = LockOutputDir(d.path, "job-a", 1);
  EXPECT_FALSE(via_symlink.ok());
  fs::remove(d.path + "/.anneal-lock");
  fs::create_hard_link(d.path + "/precious", d.path + "/.anneal-lock");
  auto via_link = LockOutputDir(d.path, "job-a", 1);
  ASSERT_FALSE(via_link.ok());
  EXPECT_NE(via_link.status().message().find("one link"), std::string::npos) << via_link.status().message();
  EXPECT_EQ(Slurp(d.path + "/precious"), "keep");
}

}  // namespace
}  // namespace anneal::agent
