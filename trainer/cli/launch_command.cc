// anneal-train launch --nproc-per-node N [--master-port P] -- <anneal-train arguments>
//
// Spawns N local ranks of this program with torchrun's environment (like torchrun --standalone): RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT (a free port unless given).
// If any rank fails, the others are sent SIGTERM, then SIGKILL after a grace period: no rank is left waiting
// on a dead peer. Exits with the first failing rank's status (0 when all succeed).
//
// Preemption: every SIGUSR1 the launcher gets is forwarded to each live rank (trainer/train/preemption.h: the
// ranks agree on a step, checkpoint and exit kPreemptedExitCode). A rank exiting kPreemptedExitCode is not a
// failure (its peers are stopping at the same step); the launcher exits kPreemptedExitCode when no rank
// failed and at least one exited so (with the agreement, all of them).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include "common/net.h"
#include "common/shutdown.h"
#include "trainer/cli/commands.h"
#include "trainer/train/preemption.h"

namespace anneal::trainer {
namespace {

// A free loopback port for the rendezvous, or torchrun's default when none can be found.
int FreePort() {
  StatusOr<int> port = FreeLoopbackPort();
  return port.ok() ? *port : 29500;
}

int ExitStatusOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

struct LaunchArgs {
  int nproc = 1;
  int port = 0;
  double grace_s = 10;
  std::vector<std::string> command;
};

int RunLaunch(const LaunchArgs& a) {
  InstallShutdownHandlers();
  train::InstallPreemptHandler();
  const int port = a.port > 0 ? a.port : FreePort();
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    std::cerr << "error: cannot find this program's path\n";
    return 1;
  }
  self[n] = '\0';
  std::vector<pid_t> pids;
  for (int r = 0; r < a.nproc; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(a.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(a.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> argv = {self};
      for (const auto& s : a.command) argv.push_back(const_cast<char*>(s.c_str()));
      argv.push_back(nullptr);
      ::execv(self, argv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  int first_failure = 0;
  bool preempted = false;
  size_t alive = pids.size();
  std::vector<bool> exited(pids.size(), false);
  auto deadline = std::chrono::steady_clock::time_point::max();
  bool forwarded = false;
  int preempts_forwarded = 0;
  while (alive > 0) {
    if (ShutdownRequested() && !forwarded) {
      // SIGTERM / SIGINT to the launcher stops the ranks the same way: SIGTERM now, SIGKILL after the grace.
      forwarded = true;
      if (first_failure == 0) first_failure = 128 + ShutdownSignal();
      for (size_t i = 0; i < pids.size(); ++i) {
        if (!exited[i]) ::kill(pids[i], SIGTERM);
      }
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.grace_s * 1000));
    }
    if (const int requests = train::PreemptRequestCount(); requests != preempts_forwarded) {
      preempts_forwarded = requests;
      for (size_t i = 0; i < pids.size(); ++i) {
        if (!exited[i]) ::kill(pids[i], SIGUSR1);
      }
    }
    int status = 0;
    pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      --alive;
      for (size_t i = 0; i < pids.size(); ++i) exited[i] = exited[i] || pids[i] == done;
      const int code = ExitStatusOf(status);
      if (code == train::kPreemptedExitCode) {
        preempted = true;
        continue;
      }
      if (code != 0 && first_failure == 0) {
        first_failure = code;
        std::cerr << "launch: a rank exited with status " << code << "; stopping the others\n";
        for (size_t i = 0; i < pids.size(); ++i) {
          if (!exited[i]) ::kill(pids[i], SIGTERM);
        }
        deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.grace_s * 1000));
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (!exited[i]) ::kill(pids[i], SIGKILL);
      }
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (first_failure == 0 && preempted) return train::kPreemptedExitCode;
  return first_failure;
}

}  // namespace

void AddLaunchCommand(CLI::App& app) {
  auto args = std::make_shared<LaunchArgs>();
  CLI::App* launch = app.add_subcommand("launch", "Run N local ranks of anneal-train (torchrun --standalone style)");
  launch->add_option("--nproc-per-node", args->nproc, "Ranks to start")->check(CLI::Range(1, 1024));
  launch->add_option("--master-port", args->port, "Rendezvous port (default: a free one)");
  launch->add_option("--grace", args->grace_s, "Seconds between SIGTERM and SIGKILL when a rank fails");
  launch->add_option("command", args->command, "anneal-train arguments after --, e.g. -- train --config job.yaml")
      ->required();
  launch->callback([args] { ExitCode() = RunLaunch(*args); });
}

}  // namespace anneal::trainer
