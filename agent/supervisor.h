// Supervisor: launches, watches and cleans up the trainer ranks of this node's tasks (one task = the local
// ranks of one job attempt). A task's phases (LAUNCHING, RUNNING, FAILING, STOPPING, ENDED) and every edge
// are drawn in agent/lifecycle.h.
//
// - Launch: fencing (an epoch older than one seen for the job is refused; the same epoch again is a no-op
//   that re-reports the task; a newer epoch kills the older task first), pre-launch checks (output and cache
//   directories writable with free space, rendezvous port bindable on the rank-0 node, slots in range), the
//   task directory with config.yaml, then one process per local rank in its own session, with torchrun's
//   environment, its log file and an event pipe (a FIFO in the task directory, so a restarted agent can
//   reopen it).
// - Watch: events parsed into reports; exits reaped (waitpid for own children, /proc polling with the
//   recorded start time for ranks adopted after an agent restart). A rank exiting non-zero fails the task at
//   once (TASK_FAILED reported) and the other local ranks are stopped.
// - Stop: SIGTERM to every rank's process group, SIGKILL when the grace period ends (and cgroup.kill of the
//   task's cgroup, where there is one); the final TaskUpdate carries every rank's exit code or signal.
// - Preempt: SIGUSR1 to each rank's own pid (not its group: the trainer checkpoints at the next step boundary
//   and exits kPreemptedExitCode), SIGKILL to the groups (and cgroup.kill) of ranks still alive after grace_ms;
//   the task ends TASK_PREEMPTED (agent/lifecycle.h, PREEMPTING). The order and its deadline are persisted, so a
//   restarted agent finishes the preemption of the ranks it re-adopts.
// - Confinement (docs/agent.md, "Ranks run unprivileged"): ranks run as the team's mapped user when the agent
//   is root, with an allow-listed environment, die with the agent (unless re-adoption is on), live in a task
//   cgroup where cgroup v2 is writable; the task hosting global rank 0 holds the output directory's lock.
// - Output lock held by a stale attempt: when an older epoch of the same job holds it (its ranks are being stopped,
//   or its host is cut off), the launch waits without starting any rank (AWAITING_LOCK, reported LAUNCHING), Tick
//   retries every output_lock_retry_ms, and the ranks start once it is free; a stop, a preemption or a newer epoch
//   ends the wait at once, and output_lock_wait_ms bounds it (then TASK_FAILED naming the holder and the wait). A
//   lock held by another job is refused at once.
// Every report goes to `report` (the agent spools and sends it); nothing here talks to the network.
//
// Thread-safety: none; everything runs on the io_context's single thread (the agent's loop). Tick() must be
// called periodically (every ~50 ms): it reaps, polls, enforces grace deadlines and rotates logs.
// Ownership: the supervisor owns its tasks' descriptors; processes outlive it only when Detach() was called.
//
// Example:
//   Supervisor sup(io, clock, options, [&](pb::AgentToCoordinator m) { agent.Report(std::move(m)); });
//   auto adopted = sup.Recover();          // tasks left by an earlier agent
//   sup.Launch(launch_task);
//   ... every 50 ms: sup.Tick();
//   sup.StopAll(10000, "agent shutdown"); while (!sup.Idle()) { io.run_for(50ms); sup.Tick(); }
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/clock.h"
#include "agent/lifecycle.h"
#include "agent/output_lock.h"
#include "agent/rank_identity.h"
#include "agent/task_record.h"
#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::agent {

struct SupervisorOptions {
  std::string work_dir;
  std::string node_id;
  // The address other nodes reach this one at (--address; empty: not set): ranks get it as ANNEAL_NODE_ADDRESS
  // and bind their collectives' transport to it, not to whatever the hostname resolves to (127.0.1.1 on Debian).
  std::string node_address;
  std::string trainer;                // program started for every rank
  std::vector<uint32_t> gpu_indices;  // empty on CPU nodes (no CUDA_VISIBLE_DEVICES)
  uint32_t slots = 0;                 // rank slots on this node (RankAssignment.slot must be below)
  uint64_t log_max_bytes = 64ull << 20;
  uint64_t min_free_bytes = 64ull << 20;
  uint32_t fail_grace_ms = 10000;  // grace for the other local ranks when one rank failed
  int64_t adopted_poll_ms = 200;   // /proc polling period for adopted ranks
  int64_t rotate_check_ms = 1000;
  // Rank logs (and resolved configs) of tasks that ended longer ago than this are deleted; the task records
  // (task.json) stay, so epoch fencing survives. 0 keeps everything.
  int64_t log_retention_ms = 7ll * 24 * 3600 * 1000;
  int64_t prune_check_ms = 3600 * 1000;
  // A launch whose output directory is locked by an older epoch of its own job (a stale attempt: being stopped, or
  // on a host cut off past the coordinator's grace) waits for the lock (agent/lifecycle.h, AWAITING_LOCK): retried
  // every output_lock_retry_ms, logged every output_lock_log_ms, failed after output_lock_wait_ms (0: no wait).
  int64_t output_lock_wait_ms = 15ll * 60 * 1000;
  int64_t output_lock_retry_ms = 1000;
  int64_t output_lock_log_ms = 60 * 1000;
  // waitpid(-1): reap every child, not only ranks. Set by the agent, which is a child subreaper
  // (PR_SET_CHILD_SUBREAPER) so orphaned grandchildren of ranks end up as its children, never as zombies.
  bool reap_orphans = false;
  // Who ranks run as (agent/rank_identity.h): when the agent runs as root, the team's mapped user (run_as);
  // otherwise the agent's own user. Never root.
  RunAsConfig run_as;
  bool agent_is_root = ::geteuid() == 0;
  std::vector<std::string> rank_env_allow;  // agent variables ranks inherit beyond the built-in allow-list
  // PR_SET_PDEATHSIG(SIGKILL) on every rank: ranks die with the agent. The agent sets it to
  // !keep_tasks_on_exit (re-adoption needs ranks that outlive it).
  bool ranks_die_with_agent = true;
  // Where task cgroups are created (agent/task_cgroup.h); empty: no cgroups (process groups only).
  std::string cgroup_base;
};

class Supervisor {
 public:
  using ReportFn = std::function<void(pb::AgentToCoordinator)>;
  Supervisor(boost::asio::io_context& io, const Clock& clock, SupervisorOptions options, ReportFn report);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Scans <work dir>/jobs: remembers every job's epoch (fencing), re-adopts tasks whose ranks still run,
  // and finishes (reports) tasks whose ranks ended while no agent watched them. Returns the statuses of
  // the tasks it supervises now (for RegisterRequest.running_tasks).
  std::vector<pb::TaskStatus> Recover();

  void Launch(const pb::LaunchTask& launch);
  void Stop(const pb::StopTask& stop);
  // PreemptTask: only for the running task of exactly that epoch; anything else (no task, another epoch, a task
  // already failing, stopping or ended) is ignored and logged. A repeated order keeps the first deadline.
  void Preempt(const pb::PreemptTask& preempt);
  // Stops every task (agent shutdown).
  void StopAll(uint32_t grace_ms, const std::string& reason);
  // Forgets every task without stopping it (--keep-tasks-on-exit): the ranks keep running for the next agent.
  void Detach();
  void Tick();
  // Called on SIGCHLD: reaps at once instead of at the next tick.
  void ReapNow() { Reap(); }

  // Tasks with live ranks or not yet final (for heartbeats and registration).
  std::vector<pb::TaskStatus> Tasks() const;
  bool Idle() const;  // no live rank anywhere
  uint64_t EpochSeen(const std::string& job_id) const;

  // Reads a rank's log of the job's latest attempt on this node (FetchLogs).
  pb::LogChunk FetchLogs(const pb::FetchLogs& request) const;
  // Deletes a checkpoint directory inside the output directory; the answer has no seq yet.
  pb::CheckpointDeleted DeleteCheckpoint(const pb::DeleteCheckpoint& request) const;

 private:
  struct Rank;
  struct Task;

  Status PreLaunchChecks(const pb::LaunchTask& launch, const std::optional<RankUser>& user) const;
  // The output lock (the task hosting global rank 0 with an output directory; others need none): OK when taken or
  // not needed; the refusal otherwise, with its holder in *holder.
  Status TakeOutputLock(Task* task, OutputLockHolder* holder);
  // The task cgroup of a task whose ranks are about to start.
  Status AcquireTaskResources(Task* task);
  // Closes the output lock and kills/removes the task cgroup (an ended task; its ranks are gone).
  void ReleaseTaskResources(Task* task);
  void KillCgroupOf(const Task& task);  // cgroup.kill of the task's cgroup, when it has one
  void StartTask(const pb::LaunchTask& launch);
  // After the pre-launch checks (and at every retry while AWAITING_LOCK): the output lock, then the ranks. A lock
  // held by an older epoch of the job makes the task wait (WaitForOutputLock); anything else refused fails it.
  void ContinueLaunch(Task* task);
  // AWAITING_LOCK: enters it (logged), logs every output_lock_log_ms, schedules the next try; past
  // output_lock_wait_ms fails the task naming the holder and the wait.
  void WaitForOutputLock(Task* task, const Status& refusal);
  // A launch that failed: ranks already started are killed (FAILING), else the task ends FAILED at once.
  void FailLaunch(Task* task, const Status& why);
  Status StartRanks(Task* task, const pb::LaunchTask& launch);
  void StartReading(Task* task, Rank* rank);
  // Ends a task none of whose ranks runs (reported, persisted, forgotten); then starts the job's queued launch.
  void FinishWithoutRanks(Task* task, pb::TaskState state, const std::string& message);
  // An ended, reported task: its resources released, its outcome kept and persisted, the task forgotten (`task`
  // dangles afterwards); then the job's queued launch starts.
  void Retire(Task* task);
  void DrainEvents(Task* task, Rank* rank);
  void HandleEventBytes(Task* task, Rank* rank, std::string_view bytes);
  void Reap();
  void OnRankExit(Task* task, Rank* rank);
  // `event`: kStopOrdered (ends STOPPED) or kRankFailed (ends FAILED); a task already stopping keeps its phase.
  void BeginStop(Task* task, uint32_t grace_ms, const std::string& reason, TaskEvent event);
  void MaybeFinish(Task* task);
  // The final state, exit code, signal and message of a PREEMPTING task whose ranks all exited.
  void SetPreemptedOutcome(Task* task, const std::string& details);
  void ReportStatus(const Task& task);
  void Persist(const Task& task);
  pb::TaskStatus StatusOf(const Task& task) const;
  void PruneOldLogs();
  // Tick: tries the output lock again for the tasks AWAITING_LOCK whose retry time came.
  void RetryOutputLocks(int64_t now);

  boost::asio::io_context& io_;
  const Clock& clock_;
  SupervisorOptions options_;
  ReportFn report_;
  std::map<std::string, std::unique_ptr<Task>> tasks_;  // job id -> its current task on this node
  std::map<std::string, pb::LaunchTask> queued_;        // launches waiting for an older task to end
  std::map<std::string, uint64_t> epochs_;              // job id -> highest launch epoch seen
  std::map<std::string, uint64_t> stop_epochs_;         // job id -> highest StopTask epoch seen
  std::map<std::string, pb::TaskStatus> finished_;      // job id -> final status of its latest task here
  std::map<std::string, uint32_t> latest_attempt_;      // job id -> latest attempt started here
  std::vector<std::string> cgroups_to_remove_;          // killed task cgroups not yet empty (retried by Tick)
  int64_t next_adopted_poll_ms_ = 0;
  int64_t next_rotate_ms_ = 0;
  int64_t next_prune_ms_ = 0;
};

}  // namespace anneal::agent
