// The daemons of a local cluster as processes: start one detached (own session, output appended to its log),
// tell whether a recorded pid still runs its program, stop a set of them, quote the end of a log.
//
// A pid read back from cluster.yaml may have been recycled by an unrelated process: IsRunning checks that the
// pid's command line still names the daemon's program, and StopDaemons signals only such pids (unless told
// the pids are this process's own unreaped children, which cannot be recycled).
//
// Thread-safety: main thread only (fork/exec, signals, waitpid).
// Ownership: a started daemon outlives this process; nothing here keeps a handle to it beyond its pid.
//
// Example:
//   DaemonProcess d{.name = "agent local-0", .program = bin, .log = log, .argv = {bin, "--node", "local-0"}};
//   ASSIGN_OR_RETURN(d.pid, SpawnDaemon(d.argv, d.log));
//   ...
//   for (const auto& line : StopDaemons({d}, std::chrono::seconds(10), /*verify_program=*/true)) ...
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::cli {

struct DaemonProcess {
  std::string name;     // "coordinator", "agent local-0"
  std::string program;  // absolute path
  pid_t pid = 0;
  std::string log;
  std::vector<std::string> argv;  // the full command line it was started with (argv[0] == program)
  std::string node;               // the agent's node id; empty for the coordinator
};

// fork + setsid + exec of argv with stdout/stderr appended to `log` and stdin from /dev/null. The child is its
// own session: closing the terminal or the CLI does not stop it. The environment is inherited.
StatusOr<pid_t> SpawnDaemon(const std::vector<std::string>& argv, const std::string& log);

// The pid exists, is not a zombie, and its argv[0] names `program` (same file name).
bool IsRunning(pid_t pid, const std::string& program);
inline bool IsRunning(const DaemonProcess& p) {
  return IsRunning(p.pid, p.program);
}

// SIGTERM to every live daemon (last listed first), SIGKILL to what is left after `grace`; one line per daemon
// signalled ("agent local-0 (pid 12) stopped" / "... killed after 10000 ms"). `verify_program` false: the pids
// are this process's children (a failed start), signalled without the command-line check and reaped.
std::vector<std::string> StopDaemons(const std::vector<DaemonProcess>& daemons, std::chrono::milliseconds grace,
                                     bool verify_program);

// The last `n` lines of a file as "\nlast lines of PATH:\n  | ..." (or a note that it is missing or empty).
std::string LogTail(const std::string& path, size_t n = 15);

}  // namespace anneal::cli
