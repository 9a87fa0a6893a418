// CheckpointRegistry: the committed checkpoints of the jobs in memory, recorded idempotently by (job, step), the
// latest committed one (where a retried attempt resumes), and retention (keep the latest N and the best K).
//
// Checkpoint states (protocol CheckpointState):
//   (reported) ──RecordCommitted──▶ COMMITTED ──ApplyRetention──▶ DELETING ──agent deleted──▶ DELETED
//        │                              ▲   ▲                        │ agent could not delete
//        │                              │   └────────────────────────┘ (retried at the next commit)
//        └──RecordCommitted (no shared ─┘ AddHolder: enough verified copies on other nodes
//           filesystem)──▶ REPLICATING ─┘ (coordinator/artifacts.h)
// The agent deletes the files first; the record says DELETED only once the node that wrote it confirmed (copies
// on other nodes are deleted too, and their answers only logged).
//
// Contract per method (record changes go into the borrowed batch; the Coordinator commits it in Flush):
//   Track / Load   a job enters the registry at submit (its retention policy) or at recovery (its stored
//                  spec's policy, every policy field at "keep everything" when the spec no longer parses, and
//                  its checkpoints from the store); Forget when it leaves the coordinator's memory.
//   AddHolder      a node holds a verified copy (a replica, or a copy staged for a resume): added to
//                  replica_nodes; a REPLICATING checkpoint with at least `commit_with` copies becomes COMMITTED.
//                  The record after the change; nullopt when unknown.
//   RecordCommitted   a tracked job's checkpoint (state COMMITTED, or REPLICATING): true when new (a step already
//   COMMITTED or DELETING is a
//                  duplicate report; a DELETED step may be committed again). An untracked job's checkpoint
//                  (a late report after the job ended) is written once if the store has no record of it.
//   ApplyRetention the checkpoints retention (jobspec::StepsToDelete) no longer keeps: marked DELETING and
//                  returned (the caller orders their deletion and records the events).
//   ConfirmDeleted the agent's answer for a DELETING checkpoint: DELETED when it deleted, back to COMMITTED
//                  when it could not; nullopt when the checkpoint was not DELETING (a duplicate or unknown).
//
// Thread-safety: none; the coordinator's loop owns it.
// Ownership: borrows the batch and the store; both must outlive it.
//
// Example:
//   CheckpointRegistry checkpoints(&batch, store);
//   checkpoints.Track(job_id, jobspec::RetentionPolicy::Of(spec.train));
//   if (checkpoints.RecordCommitted(record)) for (auto& c : checkpoints.ApplyRetention(job_id)) SendDelete(c);
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "jobspec/retention.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

// The policy itself (which steps to delete) is jobspec/retention.h, shared with a standalone trainer.
using Retention = jobspec::RetentionPolicy;

class CheckpointRegistry {
 public:
  CheckpointRegistry(storage::WriteBatch* batch, const storage::StateStore* store);

  void Track(const std::string& job_id, Retention retention);
  Status Load(const pb::JobRecord& record);
  void Forget(const std::string& job_id) { jobs_.erase(job_id); }
  bool Tracks(const std::string& job_id) const { return jobs_.count(job_id) > 0; }

  // Retention never marks a checkpoint whose path `protects` says is in use (a registered model version,
  // coordinator/model_registry.h): it stays COMMITTED. Unset: nothing is protected.
  void SetProtector(std::function<bool(const std::string& path)> protects) { protects_ = std::move(protects); }

  // `record` is complete (state COMMITTED or REPLICATING, node id, commit time).
  bool RecordCommitted(const pb::CheckpointRecord& record);
  std::optional<pb::CheckpointRecord> AddHolder(const std::string& job_id, uint64_t step, const std::string& node_id,
                                                std::optional<size_t> commit_with = std::nullopt);
  const pb::CheckpointRecord* Find(const std::string& job_id, uint64_t step) const;
  const pb::CheckpointRecord* FindByPath(const std::string& job_id, const std::string& path) const;
  // REPLICATING checkpoints of tracked jobs.
  std::vector<pb::CheckpointRecord> Replicating() const;
  std::vector<pb::CheckpointRecord> ApplyRetention(const std::string& job_id);
  std::optional<pb::CheckpointRecord> ConfirmDeleted(const pb::CheckpointDeleted& deleted);

  // The latest COMMITTED checkpoint of a tracked job; nullptr when it has none.
  const pb::CheckpointRecord* LatestCommitted(const std::string& job_id) const;
  // DELETING checkpoints the node wrote or holds a copy of (their deletion is ordered again when it registers).
  std::vector<pb::CheckpointRecord> DeletingOn(const std::string& node_id) const;
  const Retention* RetentionFor(const std::string& job_id) const;
  // Every stored checkpoint of the job, by step (tracked or not).
  StatusOr<std::vector<pb::CheckpointRecord>> Read(const std::string& job_id) const;

 private:
  struct JobCheckpoints {
    Retention retention;
    std::map<uint64_t, pb::CheckpointRecord> by_step;
  };
  void Put(const pb::CheckpointRecord& record);

  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  std::map<std::string, JobCheckpoints> jobs_;
  std::function<bool(const std::string& path)> protects_;
};

}  // namespace anneal::coordinator
