// anneal up / down / model init as real processes: stand-in daemons (shell scripts next to a copy of the
// anneal binary) record their command lines; failures are reported with the daemon's log and nothing is left
// running; down signals only the processes it recorded.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli_harness.h"
#include "jobspec/path_policy.h"

namespace anneal::cli::testing {
namespace {

namespace fs = std::filesystem;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// A copy of anneal in <dir>/bin, so "next to the anneal binary" is a directory the test controls.
std::string CopyAnneal(const TempDir& dir) {
  fs::create_directories(dir.path() + "/bin");
  const std::string copy = dir.path() + "/bin/anneal";
  fs::copy_file(ANNEAL_BINARY, copy, fs::copy_options::overwrite_existing);
  return copy;
}

// A stand-in daemon: records its arguments and pid, prints a line, then runs `tail_command`. A stand-in
// coordinator writes a public key into its --state-dir, as the real one does before it listens.
void WriteStandIn(const TempDir& dir, const std::string& name, const std::string& tail_command) {
  const std::string write_key = name != "anneal-coordinator"
                                    ? ""
                                    : "for a in \"$@\"; do [ \"$next\" = 1 ] && mkdir -p \"$a\" && echo '" +
                                          FakeServerKeys().public_key +
                                          "' > \"$a/curve.pub\"; next=0; [ \"$a\" = --state-dir ] && next=1; done\n";
  dir.Write("bin/" + name,
            "#!/bin/sh\n"
            "d=$(dirname \"$0\")\n"
            "echo \"$@\" >> \"$d/" +
                name +
                ".args\"\n"
                "echo $$ >> \"$d/" +
                name + ".pids\"\n" + write_key + "echo \"" + name + " starting\"\n" + tail_command + "\n",
            /*executable=*/true);
}

bool GoneWithin(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    size_t paren = content.rfind(')');
    if (content.empty() || (paren != std::string::npos && content.substr(paren + 2, 1) == "Z")) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST(CliCluster, UpWithoutTheDaemonsNamesTheMissingBinary) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  RunResult r = RunProgram(anneal, {"up", "--state-dir", dir.path() + "/state"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "anneal up: " + dir.path() +
                       "/bin/anneal-coordinator not found next to anneal (build the "
                       "anneal-coordinator target)\n");
}

TEST(CliCluster, UpReportsADaemonThatExitsWithItsLogAndStopsTheOthers) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  // The coordinator fails only once both agents have recorded their pids (so the test knows whom to look for).
  WriteStandIn(dir, "anneal-coordinator",
               "i=0; while [ \"$(cat \"$d/anneal-agent.pids\" 2>/dev/null | wc -l)\" -lt 2 ] && [ $i -lt 200 ]; do "
               "sleep 0.05; i=$((i+1)); done\n"
               "echo 'cannot bind tcp://127.0.0.1: address in use' >&2; exit 3");
  WriteStandIn(dir, "anneal-agent", "exec sleep 30");
  const std::string state = dir.path() + "/state";
  RunResult r =
      RunProgram(anneal, {"up", "--agents", "2", "--slots", "3", "--state-dir", state, "--wait", "10"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "anneal up: coordinator exited with status 3 during start-up")) << r.err;
  EXPECT_TRUE(Contains(r.err, "| cannot bind tcp://127.0.0.1: address in use")) << r.err;
  EXPECT_LT(r.seconds, 8.0);
  // The agents that had started were stopped, and no cluster is left recorded.
  std::ifstream pids(dir.path() + "/bin/anneal-agent.pids");
  pid_t pid;
  int agents = 0;
  while (pids >> pid) {
    ++agents;
    EXPECT_TRUE(GoneWithin(pid, std::chrono::seconds(3))) << "agent pid " << pid << " still running";
  }
  EXPECT_EQ(agents, 2);
  EXPECT_FALSE(fs::exists(state + "/cluster.yaml"));
  EXPECT_TRUE(fs::exists(state + "/logs/coordinator.log"));
}

TEST(CliCluster, UpPassesTheDocumentedFlagsAndTimesOutWhenNoNodeRegisters) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  WriteStandIn(dir, "anneal-coordinator", "exec sleep 30");
  WriteStandIn(dir, "anneal-agent", "exec sleep 30");
  const std::string state = dir.path() + "/state";
  RunResult r = RunProgram(
      anneal, {"up", "--agents", "1", "--slots", "4", "--state-dir", state, "--port", "45123", "--wait", "1"},
      dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "anneal up: the local cluster did not come up within 1 s")) << r.err;
  const std::string coordinator_args = ReadFile(dir.path() + "/bin/anneal-coordinator.args");
  EXPECT_EQ(coordinator_args.rfind(
                "--bind tcp://127.0.0.1:45123 --state-dir " + state + "/coordinator --bootstrap-admin-config ", 0),
            0u)
      << coordinator_args;
  EXPECT_TRUE(Contains(coordinator_args, "--config " + state + "/coordinator.yaml")) << coordinator_args;
  // Node identity: the coordinator takes the local join token (fresh store only), the agents join with it.
  EXPECT_TRUE(Contains(coordinator_args, "--bootstrap-join-token-file " + state + "/join-token")) << coordinator_args;
  EXPECT_EQ(ReadFile(dir.path() + "/bin/anneal-agent.args"),
            "--coordinator tcp://127.0.0.1:45123 --node local-0 --work-dir " + state +
                "/agents/local-0 --ranks-survive-agent --server-key-file " + state +
                "/coordinator/curve.pub --slots 4 --join-token-file " + state +
                "/join-token --rendezvous-ports 29500-29599");
  EXPECT_EQ(fs::status(state + "/join-token").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  pid_t coordinator_pid = std::stoi(ReadFile(dir.path() + "/bin/anneal-coordinator.pids"));
  EXPECT_TRUE(GoneWithin(coordinator_pid, std::chrono::seconds(3)));
  // The failed start did not write a client config.
  EXPECT_FALSE(fs::exists(dir.path() + "/.anneal/config"));
}

TEST(CliCluster, DownWithoutAClusterSaysSo) {
  TempDir dir;
  RunResult r = RunAnneal({"down", "--state-dir", dir.path()}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "anneal down: no local cluster recorded in " + dir.path() + "/cluster.yaml\n");
}

TEST(CliCluster, DownStopsRecordedProcessesButNotARecycledPid) {
  TempDir dir;
  pid_t listed = ::fork();
  if (listed == 0) {
    ::execl("/bin/sleep", "sleep", "30", nullptr);
    ::_exit(127);
  }
  pid_t stranger = ::fork();
  if (stranger == 0) {
    ::execl("/bin/sleep", "sleep", "30", nullptr);
    ::_exit(127);
  }
  // Both must have exec'd sleep before anneal down looks at their command lines.
  for (pid_t pid : {listed, stranger}) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ReadFile("/proc/" + std::to_string(pid) + "/cmdline").rfind("sleep", 0) != 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  dir.Write("cluster.yaml",
            "coordinator: tcp://127.0.0.1:1\ntoken: t\nprocesses:\n"
            "  - {name: agent local-0, pid: " +
                std::to_string(listed) +
                ", program: /bin/sleep, log: x}\n"
                "  - {name: coordinator, pid: " +
                std::to_string(stranger) + ", program: /usr/bin/anneal-coordinator, log: y}\n");
  RunResult r = RunAnneal({"down", "--state-dir", dir.path(), "--grace", "5"}, dir.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "agent local-0 (pid " + std::to_string(listed) + ") stopped\n");
  int status = 0;
  ASSERT_EQ(::waitpid(listed, &status, 0), listed);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  // The pid recorded for another program was left alone.
  EXPECT_EQ(::waitpid(stranger, &status, WNOHANG), 0);
  ::kill(stranger, SIGKILL);
  ::waitpid(stranger, &status, 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/cluster.yaml"));
}

// `sleep 60` as this test's child, once it has exec'd (so its command line names /bin/sleep).
pid_t StartSleep() {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sleep", "sleep", "60", nullptr);
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (ReadFile("/proc/" + std::to_string(pid) + "/cmdline").rfind("sleep", 0) != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pid;
}

void Reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// A dead pid: a child that exited and was reaped.
pid_t DeadPid() {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

// A cluster.yaml of 2 agents x 2 slots whose daemons are the given pids; `agent1_argv` is local-1's command line.
std::string ClusterYaml(const TempDir& dir, pid_t coordinator, pid_t agent0, pid_t agent1,
                        const std::string& agent1_argv) {
  const std::string logs = dir.path() + "/state/logs/";
  return "coordinator: " + DeadAddress() + "\ntoken: \"t\"\nagents: 2\nslots: 2\nprocesses:\n" +
         "  - {name: coordinator, pid: " + std::to_string(coordinator) + ", program: /bin/sleep, log: " + logs +
         "c.log, argv: [/bin/sleep, '60']}\n" +
         "  - {name: agent local-0, node: local-0, pid: " + std::to_string(agent0) +
         ", program: /bin/sleep, log: " + logs + "a0.log, argv: [/bin/sleep, '60']}\n" +
         "  - {name: agent local-1, node: local-1, pid: " + std::to_string(agent1) +
         ", program: /bin/sleep, log: " + logs + "a1.log, argv: " + agent1_argv + "}\n";
}

TEST(CliCluster, UpWithEveryRecordedDaemonRunningSaysSoAndStartsNothing) {
  TempDir dir;
  const pid_t c = StartSleep(), a0 = StartSleep(), a1 = StartSleep();
  const std::string yaml = ClusterYaml(dir, c, a0, a1, "[/bin/sleep, '60']");
  dir.Write("state/cluster.yaml", yaml);
  RunResult r = RunAnneal({"up", "--state-dir", dir.path() + "/state"}, dir.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "local cluster already running, nothing to do")) << r.out;
  EXPECT_TRUE(Contains(r.out, "agent local-1 (pid " + std::to_string(a1) + ")")) << r.out;
  EXPECT_EQ(ReadFile(dir.path() + "/state/cluster.yaml") + "\n", yaml) << "nothing was restarted or rewritten";
  for (pid_t pid : {c, a0, a1}) {
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), 0) << "pid " << pid << " was signalled";
    Reap(pid);
  }
}

TEST(CliCluster, UpThatContradictsTheRunningClusterNamesBoth) {
  TempDir dir;
  const pid_t c = StartSleep(), a0 = StartSleep();
  dir.Write("state/cluster.yaml", ClusterYaml(dir, c, a0, DeadPid(), "[/bin/sleep, '60']"));
  RunResult r = RunAnneal({"up", "--state-dir", dir.path() + "/state", "--agents", "3", "--slots", "4"}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "anneal up: a local cluster of 2 agent(s) x 2 slot(s) is running in " + dir.path() +
                       "/state and this request differs: --agents 3 (it runs 2 agent(s)); --slots 4 (its agents "
                       "have 2 slot(s)); run anneal up without these flags to keep it, anneal down first to replace "
                       "it (its running jobs are stopped), or use another --state-dir\n");
  // The same values as the running cluster are no conflict (the dead agent is restarted; it cannot register
  // here, so the up fails after --wait, which is the next test's subject).
  RunResult same = RunAnneal(
      {"up", "--state-dir", dir.path() + "/state", "--agents", "2", "--slots", "2", "--wait", "0.2"}, dir.path());
  EXPECT_TRUE(Contains(same.err, "agent local-1 (pid")) << same.err;
  EXPECT_FALSE(Contains(same.err, "differs")) << same.err;
  for (pid_t pid : {c, a0}) {
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), 0) << "pid " << pid << " was signalled";
    Reap(pid);
  }
}

TEST(CliCluster, UpRestartsOnlyTheGoneDaemonWithItsRecordedCommandLine) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  WriteStandIn(dir, "anneal-agent", "exec sleep 30");
  const pid_t c = StartSleep(), a0 = StartSleep();
  const pid_t gone = DeadPid();
  const std::string state = dir.path() + "/state";
  dir.Write(
      "state/cluster.yaml",
      ClusterYaml(dir, c, a0, gone, "[" + dir.path() + "/bin/anneal-agent, --node, local-1, --work-dir, /w/local-1]"));
  // The coordinator recorded is no coordinator at all, so local-1 never registers: the up fails after --wait,
  // stops what it started, and leaves the running daemons alone.
  RunResult r = RunProgram(anneal, {"up", "--state-dir", state, "--wait", "1"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "agent local-1 (pid " + std::to_string(gone) + ") is not running: restarting it"))
      << r.err;
  EXPECT_TRUE(Contains(r.err, "anneal up: the local cluster did not come up within 1 s")) << r.err;
  EXPECT_EQ(ReadFile(dir.path() + "/bin/anneal-agent.args"), "--node local-1 --work-dir /w/local-1");
  const pid_t restarted = std::stoi(ReadFile(dir.path() + "/bin/anneal-agent.pids"));
  EXPECT_TRUE(GoneWithin(restarted, std::chrono::seconds(3))) << "the restarted agent was not stopped again";
  for (pid_t pid : {c, a0}) {
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), 0) << "pid " << pid << " was signalled";
    Reap(pid);
  }
  EXPECT_TRUE(fs::exists(state + "/cluster.yaml")) << "the running daemons stay recorded";
}

TEST(CliCluster, UpWithLiveDaemonsRecordedByAnOlderAnnealAsksForDown) {
  TempDir dir;
  const pid_t c = StartSleep();
  dir.Write("state/cluster.yaml",
            "coordinator: tcp://127.0.0.1:1\ntoken: t\nprocesses:\n"
            "  - {name: coordinator, pid: " +
                std::to_string(c) + ", program: /bin/sleep, log: x}\n");
  RunResult r = RunAnneal({"up", "--state-dir", dir.path() + "/state"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "recorded by an older anneal up that cannot restart it: run anneal down first")) << r.err;
  Reap(c);
}

TEST(CliCluster, ModelInitWithoutTheTrainerIsAClearError) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  RunResult r = RunProgram(anneal, {"model", "init", "--preset", "tiny-llama", "--out", "/tmp/x"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            "anneal model init: the trainer was not built: " + dir.path() +
                "/bin/anneal-train does not exist (configure with LibTorch and build the anneal-train target)\n");
}

TEST(CliCluster, ModelInitForwardsEveryArgumentToTheTrainer) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  dir.Write("bin/anneal-train", "#!/bin/sh\necho \"trainer got: $@\"\nexit 7\n", /*executable=*/true);
  RunResult r = RunProgram(anneal, {"model", "init", "--preset", "tiny-llama", "--out", "/tmp/x"}, dir.path());
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_EQ(r.out, "trainer got: model init --preset tiny-llama --out /tmp/x\n");
}

TEST(CliCluster, UpWritesAPathPolicyForTheHomeTheWorkingDirectoryAndEachAllowRoot) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  WriteStandIn(dir, "anneal-coordinator", "exec sleep 30");
  WriteStandIn(dir, "anneal-agent", "exec sleep 30");
  const std::string state = dir.path() + "/state";
  RunResult r = RunProgram(
      anneal,
      {"up", "--state-dir", state, "--wait", "0.2", "--allow-root", "/data/models", "--allow-root", "/data/out/"},
      dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;  // the stand-ins never register
  auto policy =
      jobspec::ParsePathPolicy(YAML::LoadFile(state + "/coordinator.yaml")["path_policy"], "coordinator.yaml");
  ASSERT_TRUE(policy.ok()) << policy.status().message() << "\n" << ReadFile(state + "/coordinator.yaml");
  const std::vector<std::string> expected = {state, fs::current_path().string(), "/data/models", "/data/out"};
  EXPECT_EQ(policy->defaults.models, expected);
  EXPECT_EQ(policy->defaults.datasets, expected);
  EXPECT_EQ(policy->defaults.outputs, expected);
  EXPECT_TRUE(policy->teams.empty());
}

// --agent-set writes agent.yaml for every agent (values quoted: HOST:PORT stays one scalar); --coordinator-set
// quotes a value with ':' too; a malformed setting is refused naming it, and nothing is started.
TEST(CliCluster, UpWritesAgentAndCoordinatorSettingsAndRefusesAMalformedOne) {
  TempDir dir;
  const std::string anneal = CopyAnneal(dir);
  WriteStandIn(dir, "anneal-coordinator", "exec sleep 30");
  WriteStandIn(dir, "anneal-agent", "exec sleep 30");
  const std::string state = dir.path() + "/state";
  RunResult r =
      RunProgram(anneal,
                 {"up", "--state-dir", state, "--wait", "0.2", "--agent-set", "metrics_bind=127.0.0.1:0", "--agent-set",
                  "metrics_token_file=/etc/anneal/metrics-token", "--coordinator-set", "http_bind=127.0.0.1:7071"},
                 dir.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;  // the stand-ins never register
  const YAML::Node agent = YAML::LoadFile(state + "/agent.yaml");
  EXPECT_EQ(agent["metrics_bind"].as<std::string>(), "127.0.0.1:0");
  EXPECT_EQ(agent["metrics_token_file"].as<std::string>(), "/etc/anneal/metrics-token");
  EXPECT_EQ(YAML::LoadFile(state + "/coordinator.yaml")["http_bind"].as<std::string>(), "127.0.0.1:7071");
  EXPECT_TRUE(Contains(ReadFile(dir.path() + "/bin/anneal-agent.args"), "--config " + state + "/agent.yaml"));

  const std::string fresh = dir.path() + "/fresh";
  RunResult bad =
      RunProgram(anneal, {"up", "--state-dir", fresh, "--wait", "0.2", "--agent-set", "Metrics_Bind"}, dir.path());
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_TRUE(Contains(bad.err, "--agent-set 'Metrics_Bind': expected KEY=VALUE")) << bad.err;
  EXPECT_FALSE(fs::exists(fresh + "/logs/coordinator.log")) << "nothing was started";
}

}  // namespace
}  // namespace anneal::cli::testing
