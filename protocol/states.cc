#include "protocol/states.h"

#include <cctype>
#include <string>

namespace anneal::protocol {

namespace {

std::string_view WithoutPrefix(const std::string& name, std::string_view prefix) {
  std::string_view view = name;  // protobuf's *_Name returns a reference to static storage
  if (view.substr(0, prefix.size()) == prefix) view.remove_prefix(prefix.size());
  return view;
}

}  // namespace

std::string_view StateName(pb::JobState state) {
  return WithoutPrefix(pb::JobState_Name(state), "JOB_");
}
std::string_view StateName(pb::TaskState state) {
  return WithoutPrefix(pb::TaskState_Name(state), "TASK_");
}
std::string_view StateName(pb::NodeState state) {
  return WithoutPrefix(pb::NodeState_Name(state), "NODE_");
}
std::string_view StateName(pb::CheckpointState state) {
  return WithoutPrefix(pb::CheckpointState_Name(state), "CHECKPOINT_");
}

std::string_view KindName(pb::JobKind kind) {
  return WithoutPrefix(pb::JobKind_Name(kind), "JOB_");
}

std::string_view StateName(pb::PipelineStepState state) {
  switch (state) {
    case pb::PIPELINE_STEP_WAITING:
      return "waiting";
    case pb::PIPELINE_STEP_RUNNING:
      return "running";
    case pb::PIPELINE_STEP_SUCCEEDED:
      return "succeeded";
    case pb::PIPELINE_STEP_FAILED:
      return "failed";
    case pb::PIPELINE_STEP_SKIPPED:
      return "skipped";
    case pb::PIPELINE_STEP_CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

std::string_view StateName(pb::PipelineRunState state) {
  switch (state) {
    case pb::PIPELINE_RUNNING:
      return "running";
    case pb::PIPELINE_SUCCEEDED:
      return "succeeded";
    case pb::PIPELINE_FAILED:
      return "failed";
    case pb::PIPELINE_CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

std::string_view StateName(pb::ModelStage stage) {
  switch (stage) {
    case pb::MODEL_CANDIDATE:
      return "candidate";
    case pb::MODEL_PRODUCTION:
      return "production";
    case pb::MODEL_ARCHIVED:
      return "archived";
    default:
      return "unspecified";
  }
}

bool IsTerminal(pb::JobState state) {
  return state == pb::JOB_SUCCEEDED || state == pb::JOB_FAILED || state == pb::JOB_CANCELLED;
}

bool TaskEnded(pb::TaskState state) {
  return state == pb::TASK_SUCCEEDED || TaskEndedUnsuccessfully(state);
}

bool TaskEndedUnsuccessfully(pb::TaskState state) {
  return state == pb::TASK_FAILED || state == pb::TASK_STOPPED || state == pb::TASK_LOST || state == pb::TASK_PREEMPTED;
}

StatusOr<pb::JobState> ParseJobState(std::string_view text) {
  std::string upper(text);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper.rfind("JOB_", 0) != 0) upper = "JOB_" + upper;
  pb::JobState state = pb::JOB_STATE_UNSPECIFIED;
  if (pb::JobState_Parse(upper, &state) && state != pb::JOB_STATE_UNSPECIFIED) return state;
  std::string names;
  for (int i = pb::JobState_MIN; i <= pb::JobState_MAX; ++i) {
    if (!pb::JobState_IsValid(i) || i == pb::JOB_STATE_UNSPECIFIED) continue;
    names += (names.empty() ? "" : ", ") + std::string(StateName(static_cast<pb::JobState>(i)));
  }
  return InvalidArgumentError("unknown job state '" + std::string(text) + "' (one of " + names + ")");
}

}  // namespace anneal::protocol
