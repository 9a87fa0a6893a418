// Internal state of the Supervisor (agent/supervisor.h), shared by its .cc files. Not a public header.
#pragma once

#include <signal.h>

#include <array>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/events.h"
#include "agent/lifecycle.h"
#include "agent/process.h"
#include "agent/supervisor.h"
#include "agent/task_record.h"
#include "protocol/states.h"

namespace anneal::agent {

// Reads one rank's event pipe. Shared with the pending async read, which checks `closed` first, so closing
// a reader while a read is in flight is safe.
struct EventReader {
  explicit EventReader(boost::asio::io_context& io) : fifo(io) {}
  boost::asio::posix::stream_descriptor fifo;
  std::array<char, 8192> buffer{};
  LineSplitter lines;
  bool closed = false;
  void Close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ec;
    fifo.close(ec);
  }
};

struct Supervisor::Rank {
  RankRecord rec;
  bool own_child = true;  // false: adopted after an agent restart (watched through /proc)
  bool exited = false;
  bool exit_known = true;  // false: an adopted rank ended; no wait status
  ExitInfo exit;
  bool killed_after_grace = false;
  std::string log_path;
  std::string fifo_path;
  std::shared_ptr<EventReader> reader;
  bool finished_seen = false;
  std::string finished_status;
  std::string finished_message;
  bool preempted_seen = false;   // its `preempted` event, or `finished` with status "preempted"
  bool ended_unwatched = false;  // found gone at re-adoption: it ended while no agent was running

  bool Failed() const {
    if (exit_known) return exit.exit_code != 0 || exit.signal != 0;
    return !(finished_seen && finished_status == "ok");
  }
  // Whether this exit is how a rank ends a preemption (agent/lifecycle.h, PREEMPTING): it exited with
  // kPreemptedExitCode, was killed at the deadline, or died of the SIGUSR1 itself (a program without a
  // handler); a rank whose exit status is unknown (adopted) when it said so in an event, or when it ended while
  // no agent watched it (the preempt order was given; the coordinator resumes from the last committed
  // checkpoint either way).
  bool EndedPreempted() const {
    if (killed_after_grace) return true;
    if (exit_known) {
      return (exit.signal == 0 && exit.exit_code == protocol::kPreemptedExitCode) || exit.signal == SIGUSR1;
    }
    return preempted_seen || ended_unwatched;
  }
  std::string DescribeExit() const {
    if (exit_known) return exit.Describe() + (killed_after_grace ? " after the grace period" : "");
    if (killed_after_grace) return "killed by signal 9 after the grace period (adopted: no wait status)";
    if (finished_seen) return "ended while the agent was away (finished: " + finished_status + ")";
    return "ended while the agent was away; exit status unknown";
  }
};

struct Supervisor::Task {
  TaskIdentity id;
  pb::LaunchTask launch;
  std::string dir;
  std::vector<std::unique_ptr<Rank>> ranks;
  TaskPhase phase = TaskPhase::kLaunching;   // agent/lifecycle.h; FAILING: TASK_FAILED went out at the first failure
  pb::TaskState state = pb::TASK_LAUNCHING;  // what is reported (the phase's bracket in the diagram)
  bool adopted = false;
  int64_t kill_at_ms = 0;                // FAILING / STOPPING / PREEMPTING: SIGKILL from then on
  std::string stop_reason;               // why it is stopping or preempting (the final message starts with it)
  int64_t preempt_deadline_wall_ms = 0;  // PREEMPTING: kill_at_ms on the wall clock (persisted for a restart)
  int exit_code = 0;
  int signal = 0;
  std::string message;
  std::optional<RankUser> user;  // who the ranks run as (nullopt: the agent's user)
  int output_lock_fd = -1;       // agent/output_lock.h: held while the ranks of the rank-0 task run
  // AWAITING_LOCK (a stale epoch of this job holds the output lock): since when, and when to retry and log next.
  int64_t lock_wait_since_ms = 0;
  int64_t next_lock_try_ms = 0;
  int64_t next_lock_log_ms = 0;
  std::string cgroup;  // agent/task_cgroup.h: empty when none

  bool AllExited() const {
    for (const auto& r : ranks) {
      if (!r->exited) return false;
    }
    return true;
  }
};

}  // namespace anneal::agent
