// Task cgroups: where cgroup v2 is writable, every task's ranks (and everything they start, whatever session
// or process group it moves to) live in one cgroup the agent creates, so a stop or a failure kills them all
// at once (cgroup.kill) and nothing escapes. Where it is not writable (no cgroup2 mount, a read-only
// /sys/fs/cgroup, a kernel before 5.14 without cgroup.kill), the agent logs that once and falls back to the
// ranks' process groups.
//
// Layout: <cgroup2 mount><the agent's own cgroup>/anneal-<node>-<job>-e<epoch>-<agent pid>. The path is kept in
// task.json, so a restarted agent kills re-adopted tasks the same way. Under systemd give the agent's unit
// Delegate=yes so its cgroup is writable.
//
// Thread-safety: stateless functions over the filesystem.
//
// Example:
//   if (auto base = TaskCgroupBase(); base.ok()) {
//     ASSIGN_OR_RETURN(std::string cg, CreateTaskCgroup(*base, "anneal-n1-j1-e3-4242"));
//     spawn.cgroup_procs = cg + "/cgroup.procs";   // the child joins it before exec
//     ... KillTaskCgroup(cg); RemoveTaskCgroup(cg);
//   }
#pragma once

#include <string>

#include "common/status.h"

namespace anneal::agent {

// The directory task cgroups are created in (the agent's own cgroup v2 directory), after proving that a
// child cgroup with cgroup.kill can be created there. FAILED_PRECONDITION saying why not otherwise.
StatusOr<std::string> TaskCgroupBase();

// mkdir <base>/<name>; returns its path.
StatusOr<std::string> CreateTaskCgroup(const std::string& base, const std::string& name);
// Writes "1" to <cgroup>/cgroup.kill: SIGKILL to every process in it. A missing cgroup is success.
Status KillTaskCgroup(const std::string& cgroup);
// True while a process lives in the cgroup (cgroup.procs not empty).
bool TaskCgroupPopulated(const std::string& cgroup);
// rmdir (only empty cgroups can go); a missing cgroup is success.
Status RemoveTaskCgroup(const std::string& cgroup);

}  // namespace anneal::agent
