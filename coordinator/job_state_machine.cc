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

}  // namespace anneal::coordinator
