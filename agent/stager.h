// Stager: the agent's side of "no shared filesystem" (docs/transfers.md). Before a task's ranks start it copies
// the launch's StageInputs (the job's model, adapter, dataset, resume checkpoint) from the nodes that hold them
// into this node's content-addressed store, then hands the Supervisor a LaunchTask whose config names the local
// copies. It also copies committed checkpoints on the coordinator's ReplicateCheckpoint order.
//
// A staging task's life (one per job; each runs on its own worker thread, results come back on the loop):
//
//   Start ──▶ STAGING ──every input copied and verified──▶ done(launch with local paths) ──▶ Supervisor::Launch
//                │ an input failed (unreachable source, refused ticket, corrupt twice, disk full)
//                ├──────────▶ done(error): the agent reports TASK_FAILED naming the input and the source node
//                │ Cancel (StopTask / PreemptTask of that epoch or newer, a newer launch, shutdown)
//                └──────────▶ done(CANCELLED): the agent reports TASK_STOPPED (or PREEMPTED); partial files
//                             stay in the store, so the next attempt resumes them
// An input whose source is this node is used in place (nothing copied). While STAGING the task is reported as
// TASK_LAUNCHING in heartbeats and registrations (Tasks()), so the coordinator neither loses nor relaunches it.
//
// Replicate: the copy lands at the order's dest_path, which must lie inside its output_dir (resolved: no "..",
// no symlink out); the source's manifest must equal the trainer's committed file list (path, size, sha256),
// else the copy is refused (DATA_LOSS). The answer is a CheckpointReplicated report.
//
// Thread-safety: Start, Cancel, Replicate, Tasks, Staging and the destructor are called on the agent's loop
// thread only; workers touch nothing but the store (itself safe across threads) and post their results.
// Ownership: the Stager owns its worker threads; the destructor cancels and joins them (their results are
// dropped).
//
// Example:
//   Stager stager(io, {.node_id = "gpu-a", .store_dir = work_dir + "/artifacts"});
//   if (launch.stage_size() > 0) stager.Start(launch, [&](StatusOr<pb::LaunchTask> ready) { ... });
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/rank_identity.h"
#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::agent {

struct StagerOptions {
  std::string node_id;
  std::string store_dir;         // the BlobStore root (<work dir>/artifacts)
  uint64_t store_max_bytes = 0;  // pruned down to this after each staging (0: never pruned)
  int64_t request_timeout_ms = 30000;
  // Copies inside an output directory get their directories owned by the team's rank user (as the Supervisor
  // creates output directories), so the trainer may rename and delete them; files stay read-only.
  RunAsConfig run_as;
  bool agent_is_root = false;
};

class Stager {
 public:
  using LaunchDone = std::function<void(StatusOr<pb::LaunchTask>)>;
  using ReplicaDone = std::function<void(pb::CheckpointReplicated)>;

  Stager(boost::asio::io_context& io, StagerOptions options);
  ~Stager();
  Stager(const Stager&) = delete;
  Stager& operator=(const Stager&) = delete;

  // Stages `launch`'s inputs; `done` runs on the loop. A launch of an epoch already staging or older is ignored
  // (false); a newer one cancels the older staging first (its `done` gets CANCELLED). A launch of an epoch whose
  // staging already ended is ignored too (false): the coordinator resends the launches a reconnecting node does
  // not report before it reads that node's spooled reports, which carry that staging's result.
  bool Start(const pb::LaunchTask& launch, LaunchDone done);
  // Cancels the job's staging of epoch <= `epoch` (`done` then gets CANCELLED with `reason`).
  void Cancel(const std::string& job_id, uint64_t epoch, const std::string& reason);
  void CancelAll(const std::string& reason);
  void Replicate(const pb::ReplicateCheckpoint& order, ReplicaDone done);

  // TASK_LAUNCHING statuses of the tasks staging now.
  std::vector<pb::TaskStatus> Tasks() const;
  bool Staging(const std::string& job_id) const { return staging_.count(job_id) > 0; }
  bool Idle() const { return staging_.empty(); }  // replicas in flight are cancelled by the destructor

 private:
  struct Work {
    pb::LaunchTask launch;
    std::atomic<bool> cancel{false};
    std::string cancel_reason;
    std::thread thread;
  };
  void Reap();  // joins finished workers
  void RememberEnded(const std::string& job_id, uint64_t epoch);

  boost::asio::io_context& io_;
  StagerOptions options_;
  std::map<std::string, std::shared_ptr<Work>> staging_;  // job id -> its staging
  // Stagings a newer epoch of their job replaced (cancelled, maybe still running): their threads are joined once
  // their result reaches the loop (then they move to finished_), or by the destructor.
  std::vector<std::shared_ptr<Work>> superseded_;
  std::vector<std::shared_ptr<Work>> finished_;  // to join
  // The newest ended staging of each job, (job id, epoch), the most recent last; at most kEndedRemembered.
  std::deque<std::pair<std::string, uint64_t>> ended_;
  static constexpr size_t kEndedRemembered = 4096;
  std::map<uint64_t, std::thread> replica_threads_;  // joined when their answer reaches the loop
  uint64_t next_replica_ = 0;
  std::shared_ptr<std::atomic<bool>> stopping_ = std::make_shared<std::atomic<bool>>(false);
};

// The launch's config with each staged spec key pointing at `local` (key -> local path). Pure; INVALID_ARGUMENT
// when the config does not parse or a key is not one Stager knows.
StatusOr<std::string> RewriteStagedPaths(const std::string& config_yaml,
                                         const std::map<std::string, std::string>& local);

// The arguments of every rank of the launch: anneal-train's subcommand for the job's kind, --config, and
//   --set resume_from_checkpoint=<path>   the checkpoint the coordinator resumes from, when it names one;
//   --set overwrite_output_dir=true       a later attempt (attempt > 1) that the coordinator starts over (no
//                                         committed checkpoint): checkpoints an earlier attempt left in the
//                                         output directory without committing them (a replica never finished)
//                                         are this job's own and count for nothing, so they must not stop it
//                                         (the trainer refuses such a directory otherwise, to protect a first
//                                         run's user from overwriting another run).
// Pure.
std::vector<std::string> RankCommandArgs(const pb::LaunchTask& launch, const std::string& config_path);

}  // namespace anneal::agent
