// The names and predicates of the stored states (JobState, TaskState, NodeState, CheckpointState), in one place
// for the coordinator, the agent and the CLI.
//
// Names are the enum names without their prefix: "RUNNING" for JOB_RUNNING, "LOST" for TASK_LOST, "UP" for
// NODE_UP, "COMMITTED" for CHECKPOINT_COMMITTED. They appear in events, logs, tables, metrics labels and JSON,
// so they are part of the user-visible interface; the numbers are stored and never change
// (protocol/anneal.proto).
//
// Predicates:
//   IsTerminal(job)          SUCCEEDED, FAILED, CANCELLED: the job never moves again.
//   TaskEnded(task)          SUCCEEDED, FAILED, STOPPED, LOST, PREEMPTED: the task no longer runs.
//   TaskEndedUnsuccessfully  FAILED, STOPPED, LOST, PREEMPTED: ended without every rank exiting 0.
//
// Thread-safety: pure functions. The returned views point at static storage (valid forever).
//
// Example:
//   spdlog::info("job {} is {}", id, protocol::StateName(record.state()));
//   ASSIGN_OR_RETURN(pb::JobState wanted, protocol::ParseJobState("running"));
#pragma once

#include <string_view>

#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::protocol {

// A rank that checkpointed and stopped on a preemption request exits with this code (EX_TEMPFAIL: "try
// again later"); the agent reports its task TASK_PREEMPTED.
inline constexpr int kPreemptedExitCode = 75;

std::string_view StateName(pb::JobState state);
std::string_view StateName(pb::TaskState state);
std::string_view StateName(pb::NodeState state);
std::string_view StateName(pb::CheckpointState state);
std::string_view KindName(pb::JobKind kind);  // "TRAIN", "EVAL", "EXPORT"
// Pipeline runs and steps in lower case ("running", "waiting", "skipped"): they read inside sentences, and the
// CLI's tables and the HTTP JSON show them so.
std::string_view StateName(pb::PipelineRunState state);
std::string_view StateName(pb::PipelineStepState state);
// Model registry stages, lower case: "candidate", "production", "archived"; "unspecified" for the zero value.
std::string_view StateName(pb::ModelStage stage);

bool IsTerminal(pb::JobState state);
bool TaskEnded(pb::TaskState state);
bool TaskEndedUnsuccessfully(pb::TaskState state);

// Accepts "running", "RUNNING" or "JOB_RUNNING". An unknown name, or UNSPECIFIED, is an INVALID_ARGUMENT error
// that names the text and lists the valid names.
StatusOr<pb::JobState> ParseJobState(std::string_view text);

}  // namespace anneal::protocol
