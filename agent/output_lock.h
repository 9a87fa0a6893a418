// Output directory lock: the task hosting global rank 0 holds an exclusive flock on
// <output_dir>/.anneal-lock (which records "<job> <epoch> <agent pid>") from before its ranks start until they
// have all ended, so two attempts — two jobs, or a stale attempt still running somewhere and its successor —
// never write one output directory. A launch that finds the lock held by a live holder is refused, naming
// the holder; the holder's record is also returned (OutputLockHolder), so the supervisor can tell a stale
// attempt of the same job (an older epoch, whose ranks are being stopped or whose host is cut off) from another
// job: it waits for the first (agent/lifecycle.h, AWAITING_LOCK) and refuses the second at once. flock works across
// nodes on NFSv4 (emulated with POSIX locks); on filesystems without working locks the lock only protects against
// attempts on the same node.
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
//   OutputLockHolder holder;
//   auto fd = LockOutputDir(dir, "job-7", 4, &holder);
//   if (!fd.ok() && holder.IsOlderEpochOf("job-7", 4)) { ... wait and try again ... }
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace anneal::agent {

inline constexpr const char* kOutputLockName = ".anneal-lock";

// Who holds the lock, as its file records it ("<job> <epoch> <agent pid>"). A record that cannot be read or
// parsed leaves `epoch_known` false: such a holder is never taken for a stale attempt.
struct OutputLockHolder {
  std::string job_id = "?";
  uint64_t epoch = 0;
  bool epoch_known = false;
  std::string agent_pid = "?";
  // Whether the holder is an earlier attempt (a lower epoch) of `job_id`: one the coordinator has replaced.
  bool IsOlderEpochOf(const std::string& job, uint64_t newer_epoch) const {
    return epoch_known && job_id == job && epoch < newer_epoch;
  }
};

// Takes the lock for (job, epoch); returns its descriptor (close it to release). FAILED_PRECONDITION
// "output directory D is locked by job J epoch E (agent pid P)" when held elsewhere (and then *holder, when
// given, is the holder's record); INTERNAL on I/O errors (*holder untouched).
StatusOr<int> LockOutputDir(const std::string& output_dir, const std::string& job_id, uint64_t epoch,
                            OutputLockHolder* holder = nullptr);

}  // namespace anneal::agent
