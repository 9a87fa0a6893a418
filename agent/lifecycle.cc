#include "agent/lifecycle.h"

namespace anneal::agent {

ConnectionState NextConnectionState(ConnectionState state, ConnectionEvent event) {
  switch (event) {
    case ConnectionEvent::kSocketOpened:
    case ConnectionEvent::kDisconnected:
      return ConnectionState::kUnregistered;
    case ConnectionEvent::kRegisterSent:
      return state == ConnectionState::kRegistered ? state : ConnectionState::kRegistering;
    case ConnectionEvent::kRegisterNotSent:
      return state == ConnectionState::kRegistered ? state : ConnectionState::kUnregistered;
    case ConnectionEvent::kRegisterAccepted:
      return ConnectionState::kRegistered;
    case ConnectionEvent::kSessionRefused:
      return state == ConnectionState::kRegistered ? ConnectionState::kUnregistered : state;
  }
  return state;
}

std::string_view ConnectionStateName(ConnectionState state) {
  switch (state) {
    case ConnectionState::kUnregistered:
      return "UNREGISTERED";
    case ConnectionState::kRegistering:
      return "REGISTERING";
    case ConnectionState::kRegistered:
      return "REGISTERED";
  }
  return "?";
}

TaskPhase NextTaskPhase(TaskPhase phase, TaskEvent event) {
  switch (phase) {
    case TaskPhase::kLaunching:
      if (event == TaskEvent::kRanksStarted) return TaskPhase::kRunning;
      if (event == TaskEvent::kLaunchFailed || event == TaskEvent::kRankFailed) return TaskPhase::kFailing;
      if (event == TaskEvent::kStopOrdered) return TaskPhase::kStopping;
      if (event == TaskEvent::kAllRanksExited) return TaskPhase::kEnded;  // launch failed before any rank
      if (event == TaskEvent::kOutputLockBusy) return TaskPhase::kAwaitingLock;
      return phase;
    case TaskPhase::kAwaitingLock:
      if (event == TaskEvent::kRanksStarted) return TaskPhase::kRunning;
      if (event == TaskEvent::kLaunchFailed) return TaskPhase::kFailing;  // some ranks started, then one failed to
      // No rank runs while waiting: a stop, a preemption or a failure with no rank started ends the task at once.
      if (event == TaskEvent::kStopOrdered || event == TaskEvent::kPreemptOrdered ||
          event == TaskEvent::kAllRanksExited) {
        return TaskPhase::kEnded;
      }
      return phase;
    case TaskPhase::kRunning:
      if (event == TaskEvent::kRankFailed) return TaskPhase::kFailing;
      if (event == TaskEvent::kStopOrdered) return TaskPhase::kStopping;
      if (event == TaskEvent::kAllRanksExited) return TaskPhase::kEnded;
      if (event == TaskEvent::kPreemptOrdered) return TaskPhase::kPreempting;
      return phase;
    case TaskPhase::kPreempting:
      if (event == TaskEvent::kRankFailed) return TaskPhase::kFailing;
      if (event == TaskEvent::kStopOrdered) return TaskPhase::kStopping;
      if (event == TaskEvent::kAllRanksExited) return TaskPhase::kEnded;
      return phase;
    case TaskPhase::kFailing:
    case TaskPhase::kStopping:
      if (event == TaskEvent::kAllRanksExited) return TaskPhase::kEnded;
      return phase;
    case TaskPhase::kEnded:
      return phase;
  }
  return phase;
}

std::string_view TaskPhaseName(TaskPhase phase) {
  switch (phase) {
    case TaskPhase::kLaunching:
      return "LAUNCHING";
    case TaskPhase::kAwaitingLock:
      return "AWAITING_LOCK";
    case TaskPhase::kRunning:
      return "RUNNING";
    case TaskPhase::kPreempting:
      return "PREEMPTING";
    case TaskPhase::kFailing:
      return "FAILING";
    case TaskPhase::kStopping:
      return "STOPPING";
    case TaskPhase::kEnded:
      return "ENDED";
  }
  return "?";
}

}  // namespace anneal::agent
