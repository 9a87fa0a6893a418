// The agent's connection and task lifecycles (agent/lifecycle.h), edge by edge against the diagrams.
#include "agent/lifecycle.h"

#include <gtest/gtest.h>

namespace anneal::agent {
namespace {

using CS = ConnectionState;
using CE = ConnectionEvent;
using TP = TaskPhase;
using TE = TaskEvent;

TEST(ConnectionLifecycle, EveryEdgeOfTheDiagram) {
  struct Row {
    CS from;
    CE event;
    CS to;
  };
  const Row rows[] = {
      {CS::kUnregistered, CE::kRegisterSent, CS::kRegistering},
      {CS::kUnregistered, CE::kRegisterNotSent, CS::kUnregistered},
      {CS::kUnregistered, CE::kRegisterAccepted, CS::kRegistered},  // a reply to a Register queued before
      {CS::kUnregistered, CE::kSessionRefused, CS::kUnregistered},
      {CS::kUnregistered, CE::kDisconnected, CS::kUnregistered},
      {CS::kUnregistered, CE::kSocketOpened, CS::kUnregistered},
      {CS::kRegistering, CE::kRegisterAccepted, CS::kRegistered},
      {CS::kRegistering, CE::kRegisterSent, CS::kRegistering},  // the backoff's retry
      {CS::kRegistering, CE::kRegisterNotSent, CS::kUnregistered},
      {CS::kRegistering, CE::kSessionRefused, CS::kRegistering},  // a refusal: the backoff answers it
      {CS::kRegistering, CE::kDisconnected, CS::kUnregistered},
      {CS::kRegistering, CE::kSocketOpened, CS::kUnregistered},
      {CS::kRegistered, CE::kSessionRefused, CS::kUnregistered},
      {CS::kRegistered, CE::kDisconnected, CS::kUnregistered},
      {CS::kRegistered, CE::kSocketOpened, CS::kUnregistered},
      {CS::kRegistered, CE::kRegisterAccepted, CS::kRegistered},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(NextConnectionState(row.from, row.event), row.to)
        << ConnectionStateName(row.from) << " + event " << static_cast<int>(row.event);
  }
}

TEST(ConnectionLifecycle, NamesAreTheDiagramsWords) {
  EXPECT_EQ(ConnectionStateName(CS::kUnregistered), "UNREGISTERED");
  EXPECT_EQ(ConnectionStateName(CS::kRegistering), "REGISTERING");
  EXPECT_EQ(ConnectionStateName(CS::kRegistered), "REGISTERED");
}

TEST(TaskLifecycle, EveryEdgeOfTheDiagram) {
  struct Row {
    TP from;
    TE event;
    TP to;
  };
  const Row rows[] = {
      {TP::kLaunching, TE::kRanksStarted, TP::kRunning},
      {TP::kLaunching, TE::kLaunchFailed, TP::kFailing},
      {TP::kLaunching, TE::kRankFailed, TP::kFailing},
      {TP::kLaunching, TE::kAllRanksExited, TP::kEnded},
      {TP::kLaunching, TE::kStopOrdered, TP::kStopping},
      {TP::kRunning, TE::kRankFailed, TP::kFailing},
      {TP::kRunning, TE::kStopOrdered, TP::kStopping},
      {TP::kRunning, TE::kAllRanksExited, TP::kEnded},
      {TP::kFailing, TE::kAllRanksExited, TP::kEnded},
      {TP::kStopping, TE::kAllRanksExited, TP::kEnded},
      // Preemption.
      {TP::kRunning, TE::kPreemptOrdered, TP::kPreempting},
      {TP::kPreempting, TE::kAllRanksExited, TP::kEnded},
      {TP::kPreempting, TE::kRankFailed, TP::kFailing},
      {TP::kPreempting, TE::kStopOrdered, TP::kStopping},
      {TP::kPreempting, TE::kPreemptOrdered, TP::kPreempting},  // repeated order: idempotent
      // Waiting for a stale attempt's output lock.
      {TP::kLaunching, TE::kOutputLockBusy, TP::kAwaitingLock},
      {TP::kAwaitingLock, TE::kOutputLockBusy, TP::kAwaitingLock},  // still held: retried
      {TP::kAwaitingLock, TE::kRanksStarted, TP::kRunning},
      {TP::kAwaitingLock, TE::kLaunchFailed, TP::kFailing},  // some ranks had started
      {TP::kAwaitingLock, TE::kAllRanksExited, TP::kEnded},  // the bound, or refused, with no rank started
      {TP::kAwaitingLock, TE::kStopOrdered, TP::kEnded},     // no rank runs: nothing to wait for
      {TP::kAwaitingLock, TE::kPreemptOrdered, TP::kEnded},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(NextTaskPhase(row.from, row.event), row.to)
        << TaskPhaseName(row.from) << " + event " << static_cast<int>(row.event);
  }
}

TEST(TaskLifecycle, EventsWithoutAnEdgeLeaveThePhase) {
  EXPECT_EQ(NextTaskPhase(TP::kFailing, TE::kStopOrdered), TP::kFailing);   // stays a failure
  EXPECT_EQ(NextTaskPhase(TP::kStopping, TE::kRankFailed), TP::kStopping);  // stays a stop
  EXPECT_EQ(NextTaskPhase(TP::kStopping, TE::kStopOrdered), TP::kStopping);
  EXPECT_EQ(NextTaskPhase(TP::kRunning, TE::kRanksStarted), TP::kRunning);
  for (TE event : {TE::kRanksStarted, TE::kLaunchFailed, TE::kRankFailed, TE::kStopOrdered, TE::kAllRanksExited,
                   TE::kPreemptOrdered, TE::kOutputLockBusy}) {
    EXPECT_EQ(NextTaskPhase(TP::kEnded, event), TP::kEnded) << "ENDED is final";
  }
}

TEST(TaskLifecycle, OnlyALaunchWaitsForTheOutputLock) {
  for (TP phase : {TP::kRunning, TP::kPreempting, TP::kFailing, TP::kStopping}) {
    EXPECT_EQ(NextTaskPhase(phase, TE::kOutputLockBusy), phase) << TaskPhaseName(phase);
  }
  EXPECT_EQ(NextTaskPhase(TP::kAwaitingLock, TE::kRankFailed), TP::kAwaitingLock);  // no rank runs
  EXPECT_FALSE(IsStopping(TP::kAwaitingLock));
  EXPECT_FALSE(HasKillDeadline(TP::kAwaitingLock)) << "no rank to kill";
  EXPECT_EQ(TaskPhaseName(TP::kAwaitingLock), "AWAITING_LOCK");
}

TEST(TaskLifecycle, APreemptOrderHasNoEdgeOutsideRunning) {
  EXPECT_EQ(NextTaskPhase(TP::kLaunching, TE::kPreemptOrdered), TP::kLaunching);
  EXPECT_EQ(NextTaskPhase(TP::kFailing, TE::kPreemptOrdered), TP::kFailing);    // already ending as a failure
  EXPECT_EQ(NextTaskPhase(TP::kStopping, TE::kPreemptOrdered), TP::kStopping);  // a stop is not undone
  EXPECT_EQ(NextTaskPhase(TP::kPreempting, TE::kRanksStarted), TP::kPreempting);
  EXPECT_EQ(NextTaskPhase(TP::kPreempting, TE::kLaunchFailed), TP::kPreempting);
}

TEST(TaskLifecycle, OnlyFailingAndStoppingAreStopping) {
  EXPECT_FALSE(IsStopping(TP::kLaunching));
  EXPECT_FALSE(IsStopping(TP::kRunning));
  EXPECT_TRUE(IsStopping(TP::kFailing));
  EXPECT_TRUE(IsStopping(TP::kStopping));
  EXPECT_FALSE(IsStopping(TP::kEnded));
  EXPECT_FALSE(IsStopping(TP::kPreempting));  // a preempted rank that fails still reports the failure
  EXPECT_EQ(TaskPhaseName(TP::kFailing), "FAILING");
  EXPECT_EQ(TaskPhaseName(TP::kPreempting), "PREEMPTING");
}

TEST(TaskLifecycle, PreemptingStoppingAndFailingHaveAKillDeadline) {
  EXPECT_FALSE(HasKillDeadline(TP::kLaunching));
  EXPECT_FALSE(HasKillDeadline(TP::kRunning));
  EXPECT_TRUE(HasKillDeadline(TP::kPreempting));
  EXPECT_TRUE(HasKillDeadline(TP::kFailing));
  EXPECT_TRUE(HasKillDeadline(TP::kStopping));
  EXPECT_FALSE(HasKillDeadline(TP::kEnded));
}

}  // namespace
}  // namespace anneal::agent
