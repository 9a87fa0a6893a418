// The pure part of the job state machine (coordinator/job_state_machine.h): the diagram's edges, and
// NextTransition as a table of (state, report, tasks) -> (next state, action) rows.
#include "coordinator/job_state_machine.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace anneal::coordinator {
namespace {

constexpr pb::JobState kStay = pb::JOB_STATE_UNSPECIFIED;

TEST(JobStateMachine, TransitionTableMatchesTheDiagram) {
  EXPECT_TRUE(IsAllowedTransition(pb::JOB_PENDING, pb::JOB_STARTING));
  EXPECT_TRUE(IsAllowedTransition(pb::JOB_RESTARTING, pb::JOB_PENDING));
  EXPECT_FALSE(IsAllowedTransition(pb::JOB_PENDING, pb::JOB_RUNNING));
  EXPECT_FALSE(IsAllowedTransition(pb::JOB_SUCCEEDED, pb::JOB_RUNNING));
  EXPECT_FALSE(IsAllowedTransition(pb::JOB_CANCELLED, pb::JOB_CANCELLING));
  EXPECT_FALSE(IsAllowedTransition(pb::JOB_FAILED, pb::JOB_PENDING));
  EXPECT_FALSE(IsAllowedTransition(pb::JOB_CANCELLING, pb::JOB_RUNNING));
  EXPECT_TRUE(IsAllowedTransition(pb::JOB_RUNNING, pb::JOB_PREEMPTED));
  EXPECT_TRUE(IsAllowedTransition(pb::JOB_PREEMPTED, pb::JOB_PENDING));
  EXPECT_TRUE(IsAllowedTransition(pb::JOB_PREEMPTED, pb::JOB_FAILED));
  EXPECT_TRUE(IsAllowedTransition(pb::JOB_PREEMPTED, pb::JOB_CANCELLING));
  EXPECT_FALSE(IsAllowedTransition(pb::JOB_STARTING, pb::JOB_PREEMPTED));
  EXPECT_FALSE(IsAllowedTransition(pb::JOB_PREEMPTED, pb::JOB_RUNNING));
  EXPECT_FALSE(protocol::IsTerminal(pb::JOB_PREEMPTED));
  EXPECT_TRUE(protocol::IsTerminal(pb::JOB_CANCELLED));
  EXPECT_FALSE(protocol::IsTerminal(pb::JOB_RESTARTING));
}

// A job of two tasks in `state`, with the given task states, on attempt `attempt` of 2.
JobView View(pb::JobState state, std::vector<pb::TaskState> tasks, uint32_t attempt = 1) {
  pb::JobRecord record;
  record.set_state(state);
  record.set_attempt(attempt);
  record.set_max_attempts(2);
  record.set_output_dir("/out/run");
  const char* const nodes[] = {"n1", "n2", "n3"};
  for (size_t i = 0; i < tasks.size(); ++i) (*record.mutable_task_states())[nodes[i]] = tasks[i];
  return ViewOf(record, "");
}

struct Row {
  const char* name;
  JobView job;
  JobReport report;
  pb::JobState next;
  JobAction action;
};

TEST(NextTransition, FollowsTheDecisionTable) {
  using R = JobReport;
  using A = JobAction;
  const auto run = pb::TASK_RUNNING, launching = pb::TASK_LAUNCHING, ok = pb::TASK_SUCCEEDED, failed = pb::TASK_FAILED,
             stopped = pb::TASK_STOPPED, lost = pb::TASK_LOST, preempted = pb::TASK_PREEMPTED;
  const Row rows[] = {
      {"starting, one still launching", View(pb::JOB_STARTING, {run, launching}), R::kTasksChanged, kStay, A::kNone},
      {"starting, all up", View(pb::JOB_STARTING, {run, run}), R::kTasksChanged, pb::JOB_RUNNING, A::kNone},
      {"starting, one up one done", View(pb::JOB_STARTING, {run, ok}), R::kTasksChanged, pb::JOB_RUNNING, A::kNone},
      {"starting, a launch failed", View(pb::JOB_STARTING, {failed, launching}), R::kTasksChanged, pb::JOB_RESTARTING,
       A::kStopGang},
      {"running, one still running", View(pb::JOB_RUNNING, {run, ok}), R::kTasksChanged, kStay, A::kNone},
      {"running, all exited 0", View(pb::JOB_RUNNING, {ok, ok}), R::kTasksChanged, pb::JOB_SUCCEEDED, A::kNone},
      {"running, a task failed", View(pb::JOB_RUNNING, {run, failed}), R::kTasksChanged, pb::JOB_RESTARTING,
       A::kStopGang},
      {"running, a task stopped", View(pb::JOB_RUNNING, {stopped, run}), R::kTasksChanged, pb::JOB_RESTARTING,
       A::kStopGang},
      {"running, a node lost", View(pb::JOB_RUNNING, {lost, ok}), R::kTasksChanged, pb::JOB_RESTARTING, A::kStopGang},
      {"restarting, gang not stopped yet", View(pb::JOB_RESTARTING, {failed, run}), R::kTasksChanged, kStay, A::kNone},
      {"restarting, gang stopped, attempts left", View(pb::JOB_RESTARTING, {failed, stopped}), R::kTasksChanged,
       pb::JOB_PENDING, A::kRetry},
      {"restarting, gang stopped, none left", View(pb::JOB_RESTARTING, {failed, stopped}, 2), R::kTasksChanged,
       pb::JOB_FAILED, A::kNone},
      {"cancelling, one still running", View(pb::JOB_CANCELLING, {stopped, run}), R::kTasksChanged, kStay, A::kNone},
      {"cancelling, all ended", View(pb::JOB_CANCELLING, {stopped, ok}), R::kTasksChanged, pb::JOB_CANCELLED, A::kNone},
      {"cancelling, no tasks (was pending)", View(pb::JOB_CANCELLING, {}), R::kTasksChanged, pb::JOB_CANCELLED,
       A::kNone},
      {"pending, tasks changed", View(pb::JOB_PENDING, {}), R::kTasksChanged, kStay, A::kNone},
      {"pending, cancel", View(pb::JOB_PENDING, {}), R::kCancelRequested, pb::JOB_CANCELLING, A::kStopGang},
      {"starting, cancel", View(pb::JOB_STARTING, {run, launching}), R::kCancelRequested, pb::JOB_CANCELLING,
       A::kStopGang},
      {"running, cancel", View(pb::JOB_RUNNING, {run, run}), R::kCancelRequested, pb::JOB_CANCELLING, A::kStopGang},
      {"restarting, cancel", View(pb::JOB_RESTARTING, {failed, run}), R::kCancelRequested, pb::JOB_CANCELLING,
       A::kStopGang},
      {"cancelling, cancel again", View(pb::JOB_CANCELLING, {stopped, run}), R::kCancelRequested, kStay, A::kNone},
      {"succeeded, tasks changed", View(pb::JOB_SUCCEEDED, {ok, ok}), R::kTasksChanged, kStay, A::kNone},
      {"failed, cancel", View(pb::JOB_FAILED, {failed, stopped}), R::kCancelRequested, kStay, A::kNone},
      {"cancelled, cancel", View(pb::JOB_CANCELLED, {stopped}), R::kCancelRequested, kStay, A::kNone},
      {"running, preempt", View(pb::JOB_RUNNING, {run, run}), R::kPreemptRequested, pb::JOB_PREEMPTED, A::kPreemptGang},
      {"starting, preempt (cannot checkpoint yet)", View(pb::JOB_STARTING, {run, launching}), R::kPreemptRequested,
       kStay, A::kNone},
      {"pending, preempt", View(pb::JOB_PENDING, {}), R::kPreemptRequested, kStay, A::kNone},
      {"preempted, preempt again", View(pb::JOB_PREEMPTED, {run, run}), R::kPreemptRequested, kStay, A::kNone},
      {"preempted, one still running", View(pb::JOB_PREEMPTED, {preempted, run}), R::kTasksChanged, kStay, A::kNone},
      {"preempted, all ended", View(pb::JOB_PREEMPTED, {preempted, preempted}), R::kTasksChanged, pb::JOB_PENDING,
       A::kRequeue},
      {"preempted, one killed one lost", View(pb::JOB_PREEMPTED, {preempted, lost}), R::kTasksChanged, pb::JOB_PENDING,
       A::kRequeue},
      {"preempted, cancel", View(pb::JOB_PREEMPTED, {preempted, run}), R::kCancelRequested, pb::JOB_CANCELLING,
       A::kStopGang},
      {"running, a task exited preempted on its own", View(pb::JOB_RUNNING, {preempted, run}), R::kTasksChanged,
       pb::JOB_RESTARTING, A::kStopGang},
  };
  for (const Row& row : rows) {
    const Decision d = NextTransition(row.job, row.report);
    EXPECT_EQ(d.next, row.next) << row.name << ": got " << protocol::StateName(d.next);
    EXPECT_EQ(d.action, row.action) << row.name;
    if (d.next != kStay) {
      EXPECT_TRUE(IsAllowedTransition(row.job.state, d.next)) << row.name << ": not an edge of the diagram";
      EXPECT_FALSE(d.message.empty()) << row.name << ": a transition needs its event text";
    }
  }
}

TEST(NextTransition, AFailureNamesTheFirstEndedNodeUnlessTheResultAlreadySaysWhy) {
  JobView job = View(pb::JOB_RUNNING, {pb::TASK_RUNNING, pb::TASK_LOST});
  Decision d = NextTransition(job, JobReport::kTasksChanged);
  EXPECT_EQ(d.result, "the task on node n2 ended");
  EXPECT_EQ(d.stop_reason, "the task on node n2 ended");
  job.result = "task on node n2 failed (exit code 3)";
  d = NextTransition(job, JobReport::kTasksChanged);
  EXPECT_EQ(d.result, job.result);
  EXPECT_EQ(d.message, job.result);
}

TEST(NextTransition, SuccessNamesTheOutputAndCancelSaysCancelled) {
  Decision d = NextTransition(View(pb::JOB_RUNNING, {pb::TASK_SUCCEEDED}), JobReport::kTasksChanged);
  EXPECT_EQ(d.result, "output in /out/run");
  d = NextTransition(View(pb::JOB_RUNNING, {pb::TASK_RUNNING}), JobReport::kCancelRequested);
  EXPECT_EQ(d.result, "cancelled");
  EXPECT_EQ(d.stop_reason, "job cancelled");
}

TEST(NextTransition, ARetryResumesFromTheLatestCheckpointElseTheRecordsOwn) {
  pb::JobRecord record;
  record.set_state(pb::JOB_RESTARTING);
  record.set_attempt(1);
  record.set_max_attempts(3);
  record.set_result("task on node n1 failed");
  record.set_resume_checkpoint("/out/run/checkpoint-5");
  (*record.mutable_task_states())["n1"] = pb::TASK_FAILED;
  EXPECT_EQ(ViewOf(record, "").resume_checkpoint, "/out/run/checkpoint-5");
  const JobView view = ViewOf(record, "/out/run/checkpoint-10");
  EXPECT_EQ(view.resume_checkpoint, "/out/run/checkpoint-10");
  const Decision d = NextTransition(view, JobReport::kTasksChanged);
  EXPECT_EQ(d.next, pb::JOB_PENDING);
  EXPECT_EQ(d.action, JobAction::kRetry);
  EXPECT_EQ(d.message,
            "retrying (attempt 1 of 3 failed: task on node n1 failed); resuming from "
            "/out/run/checkpoint-10");
}

// A preempted job ends PENDING (reclaim) or FAILED (time limit) once its gang stopped; preemptions never use
// up attempts.
TEST(NextTransition, APreemptedJobRequeuesWithoutUsingAnAttemptOrFailsAtItsTimeLimit) {
  pb::JobRecord record;
  record.set_state(pb::JOB_PREEMPTED);
  record.set_attempt(3);  // three placements, two of them ended by preemptions: one attempt used
  record.set_preemptions(2);
  record.set_max_attempts(1);
  record.set_preempt_reason("team b reclaims 4 slots for job-b");
  (*record.mutable_task_states())["n1"] = pb::TASK_PREEMPTED;
  JobView view = ViewOf(record, "/out/run/checkpoint-7");
  EXPECT_EQ(view.attempt, 1u);
  Decision d = NextTransition(view, JobReport::kTasksChanged);
  EXPECT_EQ(d.next, pb::JOB_PENDING);
  EXPECT_EQ(d.action, JobAction::kRequeue);
  EXPECT_EQ(d.message,
            "requeued after preemption 3 (team b reclaims 4 slots for job-b); resuming from /out/run/checkpoint-7");

  record.set_preempt_for_time_limit(true);
  record.set_preempt_reason("time limit 60 min reached");
  d = NextTransition(ViewOf(record, "/out/run/checkpoint-7"), JobReport::kTasksChanged);
  EXPECT_EQ(d.next, pb::JOB_FAILED);
  EXPECT_EQ(*d.result, "time limit 60 min reached; the gang stopped, its last checkpoint is /out/run/checkpoint-7");
  d = NextTransition(ViewOf(record, ""), JobReport::kTasksChanged);
  EXPECT_EQ(*d.result, "time limit 60 min reached; the gang stopped before any checkpoint");

  // A failure after requeues still counts: attempt 4 with 2 preemptions is the 2nd attempt used.
  record.set_state(pb::JOB_RESTARTING);
  record.set_attempt(4);
  record.set_max_attempts(2);
  (*record.mutable_task_states())["n1"] = pb::TASK_FAILED;
  EXPECT_EQ(NextTransition(ViewOf(record, ""), JobReport::kTasksChanged).next, pb::JOB_FAILED);
  record.set_max_attempts(3);
  EXPECT_EQ(NextTransition(ViewOf(record, ""), JobReport::kTasksChanged).next, pb::JOB_PENDING);
}

// Infrastructure restarts (job_state_machine.h): the RESTARTING rows, edge by edge. A job on attempt 2 of 2 (its
// attempts are spent) with infra_restarts used of max_infra_restarts, whose gang ended with these tasks.
JobView Restarting(std::vector<pb::TaskState> tasks, uint32_t infra_used, uint32_t infra_max) {
  pb::JobRecord record;
  record.set_state(pb::JOB_RESTARTING);
  record.set_attempt(2 + infra_used);  // every earlier infrastructure restart was a placement too
  record.set_max_attempts(2);
  record.set_infra_restarts(infra_used);
  record.set_max_infra_restarts(infra_max);
  record.set_result("node n1 silent for 10000 ms (timeout 10000 ms): task lost");
  const char* const nodes[] = {"n1", "n2", "n3"};
  for (size_t i = 0; i < tasks.size(); ++i) (*record.mutable_task_states())[nodes[i]] = tasks[i];
  return ViewOf(record, "/out/run/checkpoint-20");
}

TEST(InfraRestarts, AnAttemptWithALostTaskIsChargedToTheInfraBudgetNotToTheAttempts) {
  const JobView view = Restarting({pb::TASK_LOST, pb::TASK_STOPPED}, 3, 10);
  EXPECT_EQ(view.attempt, 2u) << "placements ended by a lost node are not attempts";
  const Decision d = NextTransition(view, JobReport::kTasksChanged);
  EXPECT_EQ(d.next, pb::JOB_PENDING) << "attempts are spent, yet a lost node restarts the job";
  EXPECT_EQ(d.action, JobAction::kInfraRetry);
  EXPECT_EQ(d.message,
            "restarting after a lost node (infrastructure restart 4 of 10, not an attempt: node n1 silent for "
            "10000 ms (timeout 10000 ms): task lost); resuming from /out/run/checkpoint-20");
}

TEST(InfraRestarts, ALostTaskCountsWhateverEndedFirstInTheGang) {
  // The usual sign of a dead host: the survivors fail first (their peers are gone), then the node is lost.
  const Decision d = NextTransition(Restarting({pb::TASK_LOST, pb::TASK_FAILED}, 0, 10), JobReport::kTasksChanged);
  EXPECT_EQ(d.action, JobAction::kInfraRetry);
}

TEST(InfraRestarts, WithoutALostTaskTheAttemptsDecide) {
  Decision d = NextTransition(Restarting({pb::TASK_FAILED, pb::TASK_STOPPED}, 3, 10), JobReport::kTasksChanged);
  EXPECT_EQ(d.next, pb::JOB_FAILED) << "attempt 2 of 2 failed with every node reachable";
  EXPECT_EQ(d.action, JobAction::kNone);
  EXPECT_EQ(d.message.rfind("no attempts left (2 of 2)", 0), 0u) << d.message;
  JobView view = Restarting({pb::TASK_FAILED, pb::TASK_STOPPED}, 3, 10);
  view.max_attempts = 3;
  EXPECT_EQ(NextTransition(view, JobReport::kTasksChanged).action, JobAction::kRetry);
}

TEST(InfraRestarts, PastTheBudgetTheJobFailsNamingIt) {
  const Decision d = NextTransition(Restarting({pb::TASK_LOST, pb::TASK_STOPPED}, 10, 10), JobReport::kTasksChanged);
  EXPECT_EQ(d.next, pb::JOB_FAILED);
  EXPECT_EQ(d.action, JobAction::kNone);
  ASSERT_TRUE(d.result.has_value());
  EXPECT_EQ(*d.result,
            "infrastructure restart budget spent (10 of 10, scheduling.max_infra_restarts): node n1 silent for "
            "10000 ms (timeout 10000 ms): task lost");
  EXPECT_EQ(d.message, *d.result);
  // A budget of 0: the first lost node fails the job.
  EXPECT_EQ(NextTransition(Restarting({pb::TASK_LOST}, 0, 0), JobReport::kTasksChanged).next, pb::JOB_FAILED);
}

TEST(InfraRestarts, TheGangIsWaitedForAndAPreemptedGangIsRequeuedUncharged) {
  EXPECT_EQ(NextTransition(Restarting({pb::TASK_LOST, pb::TASK_RUNNING}, 0, 10), JobReport::kTasksChanged).next, kStay)
      << "a survivor still running: the gang has not stopped yet";
  JobView preempted = Restarting({pb::TASK_LOST, pb::TASK_PREEMPTED}, 0, 10);
  preempted.state = pb::JOB_PREEMPTED;
  EXPECT_EQ(NextTransition(preempted, JobReport::kTasksChanged).action, JobAction::kRequeue);
  JobView running = Restarting({pb::TASK_LOST, pb::TASK_RUNNING}, 0, 10);
  running.state = pb::JOB_RUNNING;
  EXPECT_EQ(NextTransition(running, JobReport::kTasksChanged).action, JobAction::kStopGang)
      << "a lost task stops the gang like any other end";
}

}  // namespace
}  // namespace anneal::coordinator
