// Process primitives of the task supervisor: start a rank in its own session with its stdout/stderr on a
// log file and its event pipe on a fixed descriptor, optionally in a task cgroup, as another user and dying
// with the agent; signal its process group; identify a process across
// agent restarts by pid plus start time (/proc/<pid>/stat field 22), so a recycled pid is never mistaken
// for a rank.
//
// Thread-safety: stateless functions. Spawn uses fork+exec and only async-signal-safe calls in the child,
// so it is safe in a multi-threaded process (ZeroMQ's I/O threads).
//
// Example:
//   SpawnSpec spec{.program = "/usr/bin/anneal-train", .args = {"train", "--config", cfg},
//                  .env = {"RANK=0", ...}, .cwd = task_dir, .log_path = task_dir + "/rank-0.log",
//                  .events_fd = fifo_fd};
//   ASSIGN_OR_RETURN(pid_t pid, Spawn(spec));        // pid == its process group id
//   SignalGroup(pid, SIGTERM);
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::agent {

// The descriptor number a rank finds its event pipe on (ANNEAL_EVENTS_FD).
inline constexpr int kRankEventsFd = 3;

struct SpawnSpec {
  std::string program;
  std::vector<std::string> args;  // without argv[0]
  std::vector<std::string> env;   // complete environment, "K=V"
  std::string cwd;
  std::string log_path;           // stdout and stderr, opened O_APPEND (so copytruncate rotation works)
  int events_fd = -1;             // dup'ed to kRankEventsFd in the child when >= 0
  // Run as this user (the agent must be root): setgroups(groups), setgid, setuid before exec, then verified
  // (real, effective and saved ids; setuid(0) must fail). uid 0 is refused.
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  // PR_SET_PDEATHSIG(SIGKILL) after the credential change (a change clears it), then getppid() is checked: an
  // agent that died between fork and prctl means the child exits at once. The death signal follows the
  // thread that forked: spawn from the agent's loop thread, which lives as long as the agent.
  bool die_with_parent = false;
  // <task cgroup>/cgroup.procs: the child moves itself there first ("0"), so everything it starts stays there.
  std::string cgroup_procs;
};

// Starts the process in a new session (setsid: its pid is its process group id). Fails with NOT_FOUND /
// PERMISSION_DENIED / INTERNAL naming the program and the step (joining the cgroup, switching user, exec)
// that failed (reported through a close-on-exec pipe).
StatusOr<pid_t> Spawn(const SpawnSpec& spec);

// Start time of `pid` in clock ticks since boot; NOT_FOUND when there is no such process.
StatusOr<uint64_t> ProcessStartTime(pid_t pid);
// The state letter of /proc/<pid>/stat (R, S, D, Z, T, ...); '\0' when the process does not exist.
char ProcessState(pid_t pid);
// True when `pid` exists, is not a zombie, and started at `start_time` (0 = do not check).
bool ProcessAlive(pid_t pid, uint64_t start_time);

// kill(-pgid, sig), falling back to kill(pid, sig) when the group is gone. Returns false if neither exists.
bool SignalGroup(pid_t pgid, int sig);
// True while any process of group `pgid` is alive (not a zombie), scanning /proc.
bool GroupHasLiveMembers(pid_t pgid);

// What ended a process, from a waitpid status.
struct ExitInfo {
  int exit_code = 0;  // exit status, or 128+signal when killed
  int signal = 0;     // 0 when it exited normally
  std::string Describe() const;  // "exited with code 3" / "killed by signal 9 (Killed)"
};
ExitInfo DecodeWaitStatus(int wstatus);

}  // namespace anneal::agent
