// TaskRecord: what the agent writes into a task directory (<work dir>/jobs/<job>/attempt-<n>/task.json) so a
// restarted agent can find the ranks it started (pid plus /proc start time), the epoch it last saw for each
// job (fencing), and whether the task's final status was already reported.
//
// Directory layout (docs/agent.md):
//   <work dir>/jobs/<job>/attempt-<n>/config.yaml       resolved trainer config (LaunchTask.trainer_config_yaml)
//   <work dir>/jobs/<job>/attempt-<n>/task.json         this record
//   <work dir>/jobs/<job>/attempt-<n>/rank-<r>.log      stdout+stderr of local rank r (rank-<r>.log.1 rotated)
//   <work dir>/jobs/<job>/attempt-<n>/rank-<r>.events   the rank's event pipe (a FIFO)
//
// Thread-safety: value type and stateless functions.
//
// Example:
//   TaskRecord rec; rec.job_id = "j1"; ...; RETURN_IF_ERROR(WriteTaskRecord(dir, rec));
//   ASSIGN_OR_RETURN(auto all, ScanTaskRecords(work_dir));   // every task.json, oldest attempt first
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::agent {

struct RankRecord {
  uint32_t global_rank = 0;
  uint32_t local_rank = 0;
  uint32_t slot = 0;
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22
};

struct TaskRecord {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t epoch = 0;
  int kind = 0;  // pb::JobKind
  std::string output_dir;
  std::vector<RankRecord> ranks;
  bool final = false;  // the final status below was reached (and handed to the spool)
  int state = 0;       // pb::TaskState
  int exit_code = 0;
  int signal = 0;
  std::string message;
  std::string cgroup;  // the task cgroup (agent/task_cgroup.h); empty when none
  // A PreemptTask was obeyed and the ranks have not all ended (agent/lifecycle.h, PREEMPTING): its deadline on
  // the wall clock (unix ms) and the reason. 0: not preempting. A restarted agent keeps preempting until then.
  int64_t preempt_deadline_wall_ms = 0;
  std::string preempt_reason;
};

// <work dir>/jobs/<job>/attempt-<n>
std::string TaskDir(const std::string& work_dir, const std::string& job_id, uint32_t attempt);

Status WriteTaskRecord(const std::string& task_dir, const TaskRecord& record);
StatusOr<TaskRecord> ReadTaskRecord(const std::string& task_dir);
// Every readable task.json under <work dir>/jobs, with its directory; unreadable ones are logged and skipped.
std::vector<std::pair<std::string, TaskRecord>> ScanTaskRecords(const std::string& work_dir);

// A job id must be usable as one path component: [A-Za-z0-9._-], not "." or "..", at most 128 chars.
Status ValidateJobId(const std::string& job_id);

}  // namespace anneal::agent
