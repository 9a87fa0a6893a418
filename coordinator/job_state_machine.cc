#include "coordinator/job_state_machine.h"

#include <fmt/format.h>

#include <map>

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
      return to == pb::JOB_SUCCEEDED || to == pb::JOB_RESTARTING || to == pb::JOB_CANCELLING || to == pb::JOB_PREEMPTED;
    case pb::JOB_PREEMPTED:
      return to == pb::JOB_PENDING || to == pb::JOB_FAILED || to == pb::JOB_CANCELLING;
    case pb::JOB_RESTARTING:
      return to == pb::JOB_PENDING || to == pb::JOB_FAILED || to == pb::JOB_CANCELLING;
    case pb::JOB_CANCELLING:
      return to == pb::JOB_CANCELLED;
    default:
      return false;
  }
}

TaskSummary SummarizeTasks(const google::protobuf::Map<std::string, pb::TaskState>& task_states) {
  TaskSummary summary;
  // protobuf maps have no order: walk the node ids sorted, so "the first failed node" is deterministic.
  std::map<std::string, pb::TaskState> sorted(task_states.begin(), task_states.end());
  for (const auto& [node, state] : sorted) {
    ++summary.total;
    if (state == pb::TASK_RUNNING || state == pb::TASK_SUCCEEDED) ++summary.up;
    if (state == pb::TASK_SUCCEEDED) ++summary.succeeded;
    if (protocol::TaskEnded(state)) ++summary.ended;
    if (state == pb::TASK_LOST) ++summary.lost;
    if (protocol::TaskEndedUnsuccessfully(state) && summary.first_unsuccessful_node.empty()) {
      summary.first_unsuccessful_node = node;
    }
  }
  return summary;
}

JobView ViewOf(const pb::JobRecord& record, const std::string& latest_checkpoint) {
  JobView view;
  view.state = record.state();
  const uint32_t not_charged = record.preemptions() + record.infra_restarts();
  view.attempt = record.attempt() >= not_charged ? record.attempt() - not_charged : 0;
  view.max_attempts = record.max_attempts();
  view.preemptions = record.preemptions();
  view.infra_restarts = record.infra_restarts();
  view.max_infra_restarts = record.max_infra_restarts();
  view.preempt_for_time_limit = record.preempt_for_time_limit();
  view.preempt_reason = record.preempt_reason();
  view.result = record.result();
  view.output_dir = record.output_dir();
  view.resume_checkpoint = latest_checkpoint.empty() ? record.resume_checkpoint() : latest_checkpoint;
  view.tasks = SummarizeTasks(record.task_states());
  return view;
}

namespace {

Decision Stay() {
  return {};
}

Decision OnCancel(const JobView& job) {
  switch (job.state) {
    case pb::JOB_PENDING:
    case pb::JOB_STARTING:
    case pb::JOB_RUNNING:
    case pb::JOB_RESTARTING:
    case pb::JOB_PREEMPTED:
      return {pb::JOB_CANCELLING, JobAction::kStopGang, "cancel requested", "cancelled", "job cancelled"};
    default:
      return Stay();  // already cancelling, or ended
  }
}

// Every task of a preempted gang ended (checkpointed and exited, killed at the deadline, or lost): the job
// resumes from its latest checkpoint, or, stopped by its time limit, ends.
Decision OnPreemptedTasksChanged(const JobView& job) {
  if (job.tasks.ended < job.tasks.total) return Stay();
  const std::string from = job.resume_checkpoint.empty() ? "from the start" : "from " + job.resume_checkpoint;
  if (job.preempt_for_time_limit) {
    const std::string result = fmt::format(
        "{}; the gang stopped{}", job.preempt_reason,
        job.resume_checkpoint.empty() ? " before any checkpoint" : ", its last checkpoint is " + job.resume_checkpoint);
    return {pb::JOB_FAILED, JobAction::kNone, result, result, {}};
  }
  return {pb::JOB_PENDING,
          JobAction::kRequeue,
          fmt::format("requeued after preemption {} ({}); resuming {}", job.preemptions + 1, job.preempt_reason, from),
          {},
          {}};
}

// Every task of an attempt ended and at least one was LOST: an infrastructure fault, charged to
// infra_restarts while the budget lasts (job_state_machine.h, "Infrastructure restarts").
Decision OnNodeLostAttemptEnded(const JobView& job) {
  if (job.infra_restarts < job.max_infra_restarts) {
    const std::string from = job.resume_checkpoint.empty() ? "from the start" : "from " + job.resume_checkpoint;
    return {
        pb::JOB_PENDING,
        JobAction::kInfraRetry,
        fmt::format("restarting after a lost node (infrastructure restart {} of {}, not an attempt: {}); resuming {}",
                    job.infra_restarts + 1, job.max_infra_restarts, job.result, from),
        {},
        {}};
  }
  const std::string result =
      fmt::format("infrastructure restart budget spent ({} of {}, scheduling.max_infra_restarts): {}",
                  job.infra_restarts, job.max_infra_restarts, job.result);
  return {pb::JOB_FAILED, JobAction::kNone, result, result, {}};
}

Decision OnTasksChanged(const JobView& job) {
  const TaskSummary& tasks = job.tasks;
  switch (job.state) {
    case pb::JOB_STARTING:
    case pb::JOB_RUNNING:
      if (!tasks.first_unsuccessful_node.empty()) {
        const std::string reason =
            job.result.empty() ? fmt::format("the task on node {} ended", tasks.first_unsuccessful_node) : job.result;
        return {pb::JOB_RESTARTING, JobAction::kStopGang, reason, reason, reason};
      }
      if (job.state == pb::JOB_STARTING && tasks.total > 0 && tasks.up == tasks.total) {
        return {pb::JOB_RUNNING, JobAction::kNone, fmt::format("all {} task(s) running", tasks.total), {}, {}};
      }
      if (job.state == pb::JOB_RUNNING && tasks.total > 0 && tasks.succeeded == tasks.total) {
        return {pb::JOB_SUCCEEDED,
                JobAction::kNone,
                "every task exited 0",
                job.output_dir.empty() ? "succeeded" : "output in " + job.output_dir,
                {}};
      }
      return Stay();
    case pb::JOB_RESTARTING: {
      if (tasks.ended < tasks.total) return Stay();
      if (tasks.lost > 0) return OnNodeLostAttemptEnded(job);
      if (job.attempt < job.max_attempts) {
        const std::string from = job.resume_checkpoint.empty() ? "from the start" : "from " + job.resume_checkpoint;
        return {pb::JOB_PENDING,
                JobAction::kRetry,
                fmt::format("retrying (attempt {} of {} failed: {}); resuming {}", job.attempt, job.max_attempts,
                            job.result, from),
                {},
                {}};
      }
      return {pb::JOB_FAILED,
              JobAction::kNone,
              fmt::format("no attempts left ({} of {}): {}", job.attempt, job.max_attempts, job.result),
              {},
              {}};
    }
    case pb::JOB_CANCELLING:
      if (tasks.ended == tasks.total) return {pb::JOB_CANCELLED, JobAction::kNone, "every task stopped", {}, {}};
      return Stay();
    case pb::JOB_PREEMPTED:
      return OnPreemptedTasksChanged(job);
    default:
      return Stay();
  }
}

Decision OnPreempt(const JobView& job) {
  if (job.state != pb::JOB_RUNNING) return Stay();  // only a running gang can checkpoint on request
  const std::string what = job.preempt_for_time_limit ? "time limit reached" : "preempted";
  return {pb::JOB_PREEMPTED, JobAction::kPreemptGang, fmt::format("{}: {}", what, job.preempt_reason), {}, {}};
}

}  // namespace

Decision NextTransition(const JobView& job, JobReport report) {
  switch (report) {
    case JobReport::kCancelRequested:
      return OnCancel(job);
    case JobReport::kTasksChanged:
      return OnTasksChanged(job);
    case JobReport::kPreemptRequested:
      return OnPreempt(job);
  }
  return Stay();
}

}  // namespace anneal::coordinator
