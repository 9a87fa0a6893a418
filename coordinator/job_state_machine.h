// The job state machine (docs/architecture.md, "Job lifecycle"): which transitions exist, which states are
// terminal, and the pure decision of a job's next transition from its record and what was reported about it.
//
//   PENDING ──place──▶ STARTING ──all ranks up──▶ RUNNING ──every task exited 0──▶ SUCCEEDED
//      ▲                  │                          │ task failed / node lost / task missing
//      │                  └──────────┬───────────────┘
//      └──── attempts left ◀──── RESTARTING (StopTask to the whole gang; wait until every task ended)
//                                    └── no attempts left ──▶ FAILED
//   PENDING | STARTING | RUNNING | RESTARTING ──cancel──▶ CANCELLING ──every task ended──▶ CANCELLED
//
// Every edge is one WriteBatch with its JobEvent (coordinator/job_table.h). Each launch gets a new epoch (a
// fencing token, strictly increasing); reports of an older epoch are ignored and their tasks told to stop.
// A PENDING job has no tasks, so its cancel passes CANCELLING and reaches CANCELLED in the same batch.
// STARTING -> SUCCEEDED goes through RUNNING (two events) when every task finished before all reported up.
//
// NextTransition decides ONE edge (or none); the coordinator applies it and asks again with kTasksChanged
// until the answer is "stay", so one report can walk several edges (RUNNING -> RESTARTING -> PENDING when the
// failed task was the whole gang). PENDING -> STARTING is the scheduler's (coordinator/scheduling.cc), not a
// decision of this function.
//
//   state        report          tasks                            -> next        action
//   STARTING     tasks changed   one ended unsuccessfully         -> RESTARTING  stop the gang
//   STARTING     tasks changed   all RUNNING or SUCCEEDED         -> RUNNING     -
//   RUNNING      tasks changed   one ended unsuccessfully         -> RESTARTING  stop the gang
//   RUNNING      tasks changed   all SUCCEEDED                    -> SUCCEEDED   -
//   RESTARTING   tasks changed   all ended, attempt < max         -> PENDING     retry (clear tasks, resume)
//   RESTARTING   tasks changed   all ended, attempt = max         -> FAILED      -
//   CANCELLING   tasks changed   all ended                        -> CANCELLED   -
//   PENDING | STARTING | RUNNING | RESTARTING   cancel requested  -> CANCELLING  stop the gang
//   anything else                                                 -> stay
//
// Thread-safety: pure functions.
//
// Example:
//   JobView view = ViewOf(record, latest_checkpoint_path);
//   for (Decision d = NextTransition(view, JobReport::kCancelRequested); d.next != pb::JOB_STATE_UNSPECIFIED;
//        d = NextTransition(ViewOf(record, latest), JobReport::kTasksChanged)) apply(d);
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "protocol/anneal.pb.h"
#include "protocol/states.h"

namespace anneal::coordinator {

// Whether the diagram has the edge from -> to. Terminal states (protocol::IsTerminal) have no outgoing edge.
bool IsAllowedTransition(pb::JobState from, pb::JobState to);

// The counts over a job's tasks (one per placed node) that the decision needs.
struct TaskSummary {
  size_t total = 0;
  size_t up = 0;  // RUNNING or SUCCEEDED
  size_t succeeded = 0;
  size_t ended = 0;                     // protocol::TaskEnded
  std::string first_unsuccessful_node;  // the first node (by id) whose task ended unsuccessfully; empty: none
};
TaskSummary SummarizeTasks(const google::protobuf::Map<std::string, pb::TaskState>& task_states);

// What NextTransition reads of a job.
struct JobView {
  pb::JobState state = pb::JOB_STATE_UNSPECIFIED;
  uint32_t attempt = 0;
  uint32_t max_attempts = 1;
  std::string result;  // the record's current result (the first failure's description, if any)
  std::string output_dir;
  std::string resume_checkpoint;  // where a retry resumes: the latest committed checkpoint, else the record's
  TaskSummary tasks;
};
// `latest_checkpoint`: the path of the job's latest committed checkpoint; empty: none.
JobView ViewOf(const pb::JobRecord& record, const std::string& latest_checkpoint);

enum class JobReport {
  kTasksChanged,     // a task's state changed (a report, a lost node, a stop deadline), or a step was applied
  kCancelRequested,  // a client asked to cancel
};

enum class JobAction {
  kNone,
  kStopGang,  // send StopTask to every task not ended, and start the stop deadline
  kRetry,     // resume from JobView::resume_checkpoint, forget the tasks of the failed attempt
};

struct Decision {
  pb::JobState next = pb::JOB_STATE_UNSPECIFIED;  // UNSPECIFIED: stay where the job is
  JobAction action = JobAction::kNone;
  std::string message;                // the state event's text
  std::optional<std::string> result;  // the record's new result, when it changes
  std::string stop_reason;            // kStopGang: the reason the StopTasks carry
};

Decision NextTransition(const JobView& job, JobReport report);

}  // namespace anneal::coordinator
