// The job state machine (docs/architecture.md, "Job lifecycle"): which transitions exist, which states are
// terminal, and the pure decision of a job's next transition from its record and what was reported about it.
//
//   PENDING ──place──▶ STARTING ──all ranks up──▶ RUNNING ──every task exited 0──▶ SUCCEEDED
//      ▲                  │                          │ task failed / node lost / task missing
//      │                  └──────────┬───────────────┘
//      └──── budget left ◀────── RESTARTING (StopTask to the whole gang; wait until every task ended)
//                                    └── budget spent ──▶ FAILED
//         (budget: max_infra_restarts when a node of the gang was lost in the attempt, else max_attempts)
//   PENDING | STARTING | RUNNING | RESTARTING | PREEMPTED ──cancel──▶ CANCELLING ──every task ended──▶ CANCELLED
//   RUNNING ──preempt (reclaim | time limit)──▶ PREEMPTED (PreemptTask to the gang: checkpoint, exit "preempted")
//   PREEMPTED ──every task ended──▶ PENDING (reclaim: resume from the latest checkpoint; no attempt used)
//                                 └▶ FAILED  (time limit: the checkpoint stays for a resubmit)
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
//   RESTARTING   tasks changed   all ended, none LOST, attempt < max_attempts         -> PENDING  retry
//   RESTARTING   tasks changed   all ended, none LOST, attempt = max_attempts         -> FAILED   -
//   RESTARTING   tasks changed   all ended, one LOST, infra_restarts < max_infra      -> PENDING  infra retry
//   RESTARTING   tasks changed   all ended, one LOST, infra_restarts = max_infra      -> FAILED   - (names budget)
//   CANCELLING   tasks changed   all ended                        -> CANCELLED   -
//   PREEMPTED    tasks changed   all ended, reclaim               -> PENDING     requeue (resume, preemptions+1)
//   PREEMPTED    tasks changed   all ended, time limit            -> FAILED      -
//   RUNNING      preempt requested                                -> PREEMPTED   preempt the gang
//   PENDING | STARTING | RUNNING | RESTARTING | PREEMPTED   cancel requested  -> CANCELLING  stop the gang
//   anything else                                                 -> stay
//
// Attempts: max_attempts bounds failed attempts only. A placement ended by a preemption is not one, nor one
// ended by a lost node: the attempts used are attempt - preemptions - infra_restarts (JobView::attempt).
// Preemptions have their own budget (max_preemptions), enforced by the planner (a job whose budget is spent is
// never a victim).
//
// Infrastructure restarts (issue 19): an attempt in which a task of the gang ended LOST is charged to
// infra_restarts (budget max_infra_restarts, jobspec scheduling.max_infra_restarts, default 10), not to the
// attempts. TASK_LOST is written by the coordinator only (Coordinator::LoseTask), when the node is gone: DOWN
// past the reconnect grace (or with no grace), removed by an admin, DOWN while the gang is stopped (a kept task
// is released: the usual sign of a dead host in a multi-node gang is that the surviving ranks fail first while
// the dead node is DOWN), a DOWN (or removed) node that never confirmed the gang's stop, or an agent that is up
// again but no longer runs the task (it restarted without it).
// So the rule is: one LOST task in the ended attempt -> an infrastructure restart, whatever ended first; a
// failure with every node of the gang reachable -> an attempt. With max_infra_restarts 0 the first lost node
// fails the job. A preempted gang that loses a node is requeued (a preemption), not charged.
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
  size_t lost = 0;                      // TASK_LOST: the node was lost (an infrastructure fault)
  std::string first_unsuccessful_node;  // the first node (by id) whose task ended unsuccessfully; empty: none
};
TaskSummary SummarizeTasks(const google::protobuf::Map<std::string, pb::TaskState>& task_states);

// What NextTransition reads of a job.
struct JobView {
  pb::JobState state = pb::JOB_STATE_UNSPECIFIED;
  uint32_t attempt = 0;  // attempts used: placements ended neither by a preemption nor by a lost node
  uint32_t max_attempts = 1;
  uint32_t preemptions = 0;
  uint32_t infra_restarts = 0;  // attempts ended by a lost node so far (before this one)
  uint32_t max_infra_restarts = 0;
  bool preempt_for_time_limit = false;  // PREEMPTED: by the time limit (ends FAILED), else a reclaim
  std::string preempt_reason;           // PREEMPTED: the reason recorded when it was preempted
  std::string result;                   // the record's current result (the first failure's description, if any)
  std::string output_dir;
  std::string resume_checkpoint;  // where a retry resumes: the latest committed checkpoint, else the record's
  TaskSummary tasks;
};
// `latest_checkpoint`: the path of the job's latest committed checkpoint; empty: none.
JobView ViewOf(const pb::JobRecord& record, const std::string& latest_checkpoint);

enum class JobReport {
  kTasksChanged,      // a task's state changed (a report, a lost node, a stop deadline), or a step was applied
  kCancelRequested,   // a client asked to cancel
  kPreemptRequested,  // the planner chose the job as a victim, or its time limit passed (record.preempt_* set)
};

enum class JobAction {
  kNone,
  kStopGang,     // send StopTask to every task not ended, and start the stop deadline
  kRetry,        // resume from JobView::resume_checkpoint, forget the tasks of the failed attempt
  kInfraRetry,   // as kRetry, and count the infrastructure restart (infra_restarts + 1)
  kPreemptGang,  // send PreemptTask to every task not ended, and start the preemption deadline
  kRequeue,      // as kRetry, and count the preemption
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
