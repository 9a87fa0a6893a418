// Process primitives with real processes: own session, log file, event descriptor, exec errors, /proc.
#include "agent/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace anneal::agent {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Spawn, RunsInItsOwnSessionWithLogAndEventDescriptor) {
  char tmpl[] = "/tmp/anneal-spawn-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  SpawnSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "echo out $FOO; echo err >&2; echo event >&3; pwd; kill -0 $$ && ps -o sid= -p $$"};
  spec.env = {"FOO=bar", "PATH=/usr/bin:/bin"};
  spec.cwd = dir;
  spec.log_path = dir + "/rank-0.log";
  spec.events_fd = fds[1];
  auto pid = Spawn(spec);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  ::close(fds[1]);
  EXPECT_EQ(::getpgid(*pid), *pid) << "the rank leads its own process group";
  int st = 0;
  ASSERT_EQ(::waitpid(*pid, &st, 0), *pid);
  EXPECT_EQ(DecodeWaitStatus(st).exit_code, 0);
  char buf[64] = {};
  ASSERT_GT(::read(fds[0], buf, sizeof(buf)), 0);
  EXPECT_EQ(std::string(buf), "event\n");
  ::close(fds[0]);
  const std::string log = Slurp(spec.log_path);
  EXPECT_NE(log.find("out bar"), std::string::npos) << log;
  EXPECT_NE(log.find("err"), std::string::npos) << log;
  EXPECT_NE(log.find(dir), std::string::npos) << log;
  std::filesystem::remove_all(dir);
}

TEST(Spawn, ExecFailureIsAClearError) {
  SpawnSpec spec;
  spec.program = "/nonexistent/anneal-train";
  spec.log_path = "/tmp/anneal-spawn-missing.log";
  auto pid = Spawn(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.status().code(), StatusCode::kNotFound);
  EXPECT_NE(pid.status().message().find("/nonexistent/anneal-train"), std::string::npos);
  std::filesystem::remove("/tmp/anneal-spawn-missing.log");
}

TEST(ProcFs, StartTimeIdentifiesAProcessAndZombiesAreDead) {
  SpawnSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "sleep 0.2"};
  spec.log_path = "/dev/null";
  auto pid = Spawn(spec);
  ASSERT_TRUE(pid.ok());
  auto start = ProcessStartTime(*pid);
  ASSERT_TRUE(start.ok());
  EXPECT_TRUE(ProcessAlive(*pid, *start));
  EXPECT_FALSE(ProcessAlive(*pid, *start + 1)) << "another start time is another process";
  EXPECT_TRUE(GroupHasLiveMembers(*pid));
  // Exited but not reaped: a zombie is not alive.
  for (int i = 0; i < 200 && ProcessState(*pid) != 'Z'; ++i) ::usleep(10000);
  EXPECT_EQ(ProcessState(*pid), 'Z');
  EXPECT_FALSE(ProcessAlive(*pid, *start));
  int st;
  ::waitpid(*pid, &st, 0);
  EXPECT_EQ(ProcessStartTime(*pid).status().code(), StatusCode::kNotFound);
}

TEST(ExitInfo, DescribesCodesAndSignals) {
  EXPECT_EQ(DecodeWaitStatus(3 << 8).exit_code, 3);
  const ExitInfo killed = DecodeWaitStatus(SIGKILL);
  EXPECT_EQ(killed.signal, SIGKILL);
  EXPECT_EQ(killed.exit_code, 128 + SIGKILL);
  EXPECT_NE(killed.Describe().find("killed by signal 9"), std::string::npos);
}

}  // namespace
}  // namespace anneal::agent
