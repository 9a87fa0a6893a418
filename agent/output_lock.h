// Output directory lock: the task hosting global rank 0 holds an exclusive flock on
// <output_dir>/.anneal-lock (which records "<job> <epoch> <agent pid>") from before its ranks start until they
// have all ended, so two attempts — two jobs, or a stale attempt still running somewhere and its successor —
// never write one output directory. A launch that finds the lock held by a live holder is refused, naming
// the holder. flock works across nodes on NFSv4 (emulated with POSIX locks); on filesystems without
// working locks the lock only protects against attempts on the same node.
//
// The lock belongs to the agent (close-on-exec: ranks do not inherit it). An agent restarting with
// --keep-tasks-on-exit takes it again for the re-adopted task (between the two agents it is free).
// The lock file is created by the agent and opened without following symlinks; a lock file that is not a
// regular file owned by the agent's user with one link (something a rank could have planted) is refused.
//
// Thread-safety: stateless functions.
//
// Example:
//   ASSIGN_OR_RETURN(int fd, LockOutputDir("/data/out/run1", "job-7", 3));   // held until ::close(fd)
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace anneal::agent {

inline constexpr const char* kOutputLockName = ".anneal-lock";

// Takes the lock for (job, epoch); returns its descriptor (close it to release). FAILED_PRECONDITION
// "output directory D is locked by job J epoch E (agent pid P)" when held elsewhere; INTERNAL on I/O errors.
StatusOr<int> LockOutputDir(const std::string& output_dir, const std::string& job_id, uint64_t epoch);

}  // namespace anneal::agent
