// The agent's two lifecycles as explicit states with pure transition functions: its connection to the
// coordinator (agent/agent.h) and each task it supervises (agent/supervisor.h).
//
// Connection (one per agent):
//
//   UNREGISTERED ──Register sent──▶ REGISTERING ──RegisterReply accepted──▶ REGISTERED
//        ▲  ▲                           │ send refused (queue full, no socket)     │
//        │  └───────────────────────────┘                                          │
//        └───────── socket reopened / peer disconnected / session refused (Error) ─┘
//   A refused RegisterReply leaves REGISTERING (the retry timer sends again with backoff). A socket reopened or a
//   disconnect also ends REGISTERING. An Error while not REGISTERED changes nothing (stale, or a refusal the
//   backoff answers). Reports and heartbeats go out only while REGISTERED.
//
// Task (one per job on this node; the reported pb::TaskState in brackets):
//
//   LAUNCHING [LAUNCHING] ──every rank started──▶ RUNNING [RUNNING] ──every rank exited 0──▶ ENDED [SUCCEEDED]
//      │  └── launch failed, no rank started ──▶ ENDED [FAILED]     │
//      │ launch failed after some ranks started, or a rank failed   │ a rank failed (reported at once)
//      ▼                                                            ▼
//   FAILING [FAILED] (the other local ranks get SIGTERM, SIGKILL after the grace) ──all exited──▶ ENDED [FAILED]
//   LAUNCHING | RUNNING ──StopTask / superseded / shutdown──▶ STOPPING [RUNNING] ──all exited──▶ ENDED [STOPPED]
//   FAILING and STOPPING absorb a further stop order (the shorter grace wins) and further rank failures.
//
//   Waiting for a stale attempt's output lock (agent/output_lock.h; only the task hosting global rank 0 takes it):
//
//   LAUNCHING ──lock held by an OLDER epoch of the same job──▶ AWAITING_LOCK [LAUNCHING] (no rank runs; Tick retries
//      the lock every ~1 s, and heartbeats list the task, so the coordinator keeps it)
//   AWAITING_LOCK ──lock taken, every rank started──▶ RUNNING [RUNNING]
//   AWAITING_LOCK ──still held (retry)──▶ AWAITING_LOCK
//   AWAITING_LOCK ──waited past --output-lock-wait-ms, or the lock now refused for another reason (another job or
//                   a newer epoch holds it), or a rank start failed with no rank started──▶ ENDED [FAILED]
//   AWAITING_LOCK ──a rank start failed after some ranks started──▶ FAILING [FAILED]
//   AWAITING_LOCK ──StopTask / superseded by a newer epoch / shutdown──▶ ENDED [STOPPED] (at once: no rank ran)
//   AWAITING_LOCK ──PreemptTask of its epoch──▶ ENDED [PREEMPTED] (at once: no rank ran, nothing to checkpoint)
//   A lock held by another job (or by a newer epoch of this one) is no stale attempt: LAUNCHING ──▶ ENDED [FAILED] at
//   once, as any launch failure.
//
//   Preemption (PreemptTask of the running epoch; SIGUSR1 to each rank's own pid, SIGKILL at the deadline):
//
//   RUNNING ──PreemptTask──▶ PREEMPTING [RUNNING] ──all exited (75, 0, or killed at the deadline)──▶ ENDED [PREEMPTED]
//                               │  │  └── a rank failed (another code or signal) ──▶ FAILING [FAILED, reported at once]
//                               │  └── StopTask / superseded / shutdown ──▶ STOPPING [RUNNING] ──▶ ENDED [STOPPED]
//                               └── PreemptTask again ──▶ PREEMPTING (the first deadline stays)
//   A PreemptTask finds no edge from LAUNCHING (a launch completes or starts waiting before the next message is
//   read), FAILING or
//   STOPPING (already ending) or ENDED: ignored. Every rank exiting 0 while PREEMPTING (the training finished
//   before it saw the signal) still ends SUCCEEDED: there is nothing left to resume.
//   ENDED is final: its status was reported and persisted, and the task leaves the supervisor.
//
// Thread-safety: pure functions.
//
// Example:
//   connection_ = NextConnectionState(connection_, sent ? ConnectionEvent::kRegisterSent
//                                                       : ConnectionEvent::kRegisterNotSent);
//   task->phase = NextTaskPhase(task->phase, TaskEvent::kStopOrdered);
//   if (HasKillDeadline(task->phase) && now >= task->kill_at_ms) ... SIGKILL ...
#pragma once

#include <string_view>

namespace anneal::agent {

enum class ConnectionState { kUnregistered, kRegistering, kRegistered };

enum class ConnectionEvent {
  kSocketOpened,      // a new socket (or the old one closed): nothing was said on it yet
  kRegisterSent,      // a RegisterRequest went out
  kRegisterNotSent,   // the socket refused the RegisterRequest
  kRegisterAccepted,  // RegisterReply{accepted}
  kDisconnected,      // ZeroMQ reported the coordinator's connection lost
  kSessionRefused,    // the coordinator answered Error: it does not know this session
};

ConnectionState NextConnectionState(ConnectionState state, ConnectionEvent event);
std::string_view ConnectionStateName(ConnectionState state);  // "UNREGISTERED", ...

enum class TaskPhase { kLaunching, kAwaitingLock, kRunning, kPreempting, kFailing, kStopping, kEnded };

enum class TaskEvent {
  kRanksStarted,    // every local rank process started
  kLaunchFailed,    // a pre-launch check or a rank start failed
  kRankFailed,      // a rank exited non-zero or by a signal while no stop was under way
  kStopOrdered,     // StopTask, a newer epoch, or the agent's shutdown
  kAllRanksExited,  // the last live rank exited
  kPreemptOrdered,  // PreemptTask of this task's epoch: checkpoint and exit, SIGKILL at the deadline
  kOutputLockBusy,  // the output lock is held by an older epoch of the same job (a stale attempt): wait for it
};

// The phase after `event`. An event that has no edge from `phase` leaves it unchanged (for example a stop order
// to a task already stopping, or any event after ENDED).
TaskPhase NextTaskPhase(TaskPhase phase, TaskEvent event);
std::string_view TaskPhaseName(TaskPhase phase);  // "LAUNCHING", ...
// Whether the task's ranks are being stopped (FAILING or STOPPING): SIGKILL follows at the grace deadline.
inline bool IsStopping(TaskPhase phase) {
  return phase == TaskPhase::kFailing || phase == TaskPhase::kStopping;
}
// Whether ranks still alive at the task's deadline (kill_at_ms) are SIGKILLed: stopping, or preempting.
inline bool HasKillDeadline(TaskPhase phase) {
  return IsStopping(phase) || phase == TaskPhase::kPreempting;
}

}  // namespace anneal::agent
