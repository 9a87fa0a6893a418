#include "coordinator/job_state_machine.h"

namespace anneal::coordinator {

bool IsAllowedTransition(pb::JobState from, pb::JobState to) {
  switch (from) {
    case pb::JOB_STATE_UNSPECIFIED:  // submit
      return to == pb::JOB_PENDING;
    case pb::JOB_PENDING:
      return to == pb::JOB_STARTING || to == pb::JOB_CANCELLING;
    case pb::JOB_STARTING:
      return to == pb::JOB_RUNNING || to == pb::JOB_RESTARTING || to == pb::JOB_CANCELLING;
    case pb::JOB_RUNNING:
      return to == pb::JOB_SUCCEEDED || to == pb::JOB_RESTARTING || to == pb::JOB_CANCELLING;
    case pb::JOB_RESTARTING:
      return to == pb::JOB_PENDING || to == pb::JOB_FAILED || to == pb::JOB_CANCELLING;
    case pb::JOB_CANCELLING:
      return to == pb::JOB_CANCELLED;
    default:
      return false;
  }
}

bool IsTerminal(pb::JobState state) {
  return state == pb::JOB_SUCCEEDED || state == pb::JOB_FAILED || state == pb::JOB_CANCELLED;
}

bool IsTaskEnded(pb::TaskState state) {
  return state == pb::TASK_SUCCEEDED || state == pb::TASK_FAILED || state == pb::TASK_STOPPED ||
         state == pb::TASK_LOST;
}

std::string_view JobStateName(pb::JobState state) {
  std::string_view name = pb::JobState_Name(state);
  if (name.substr(0, 4) == "JOB_") name.remove_prefix(4);
  return name;
}

std::string_view TaskStateName(pb::TaskState state) {
  std::string_view name = pb::TaskState_Name(state);
  if (name.substr(0, 5) == "TASK_") name.remove_prefix(5);
  return name;
}

}  // namespace anneal::coordinator
