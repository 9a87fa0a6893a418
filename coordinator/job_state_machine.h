// The job state machine (docs/architecture.md, "Job lifecycle"): which transitions exist, which states are terminal.
//
//   PENDING ──place──▶ STARTING ──all ranks up──▶ RUNNING ──every task exited 0──▶ SUCCEEDED
//      ▲                  │                          │ task failed / node lost / task missing
//      │                  └──────────┬───────────────┘
//      └──── attempts left ◀──── RESTARTING (StopTask to the whole gang; wait until every task ended)
//                                    └── no attempts left ──▶ FAILED
//   PENDING | STARTING | RUNNING | RESTARTING ──cancel──▶ CANCELLING ──every task ended──▶ CANCELLED
//
// Every edge is one WriteBatch with its JobEvent (coordinator/jobs.cc). Each launch gets a new epoch (a
// fencing token, strictly increasing); reports of an older epoch are ignored and their tasks told to stop.
// A PENDING job has no tasks, so its cancel passes CANCELLING and reaches CANCELLED in the same batch.
// STARTING -> SUCCEEDED goes through RUNNING (two events) when every task finished before all reported up.
//
// Thread-safety: pure functions.
//
// Example:
//   if (!IsAllowedTransition(job.state(), pb::JOB_RUNNING)) ...  // a programmer error in the coordinator
#pragma once

#include <string_view>

#include "protocol/anneal.pb.h"

namespace anneal::coordinator {

bool IsAllowedTransition(pb::JobState from, pb::JobState to);
// SUCCEEDED, FAILED, CANCELLED: no further transition.
bool IsTerminal(pb::JobState state);
// A task state from which the task no longer runs (SUCCEEDED, FAILED, STOPPED, LOST).
bool IsTaskEnded(pb::TaskState state);
// "PENDING", "RUNNING", ... (the enum name without the JOB_ prefix).
std::string_view JobStateName(pb::JobState state);
std::string_view TaskStateName(pb::TaskState state);

}  // namespace anneal::coordinator
