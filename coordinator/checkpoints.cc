// Checkpoint reports (coordinator/checkpoint_registry.h keeps the records): a committed checkpoint is recorded
// with its event and retention runs; retention's deletions are ordered to the node that holds the files; the
// node's answer is recorded with its event.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/coordinator.h"

namespace anneal::coordinator {

void Coordinator::HandleCheckpointCommitted(Node& node, const pb::CheckpointRecord& reported) {
  pb::CheckpointRecord record = reported;
  // Without a shared filesystem it counts only once copies on other nodes are verified (coordinator/artifacts.h).
  record.set_state(ReplicationNeeded() ? pb::CHECKPOINT_REPLICATING : pb::CHECKPOINT_COMMITTED);
  record.set_node_id(node.record.node_id());
  record.clear_replica_nodes();
  if (record.committed_at_ms() == 0) record.set_committed_at_ms(clock_->NowMs());
  Job* job = jobs_.Find(record.job_id());
  if (job == nullptr) {
    // A late report for a job that already ended: recorded once, no retention (nor copies: nothing resumes it).
    record.set_state(pb::CHECKPOINT_COMMITTED);
    if (jobs_.GetRecord(record.job_id()).ok()) checkpoints_.RecordCommitted(record);
    return;
  }
  if (!checkpoints_.RecordCommitted(record)) return;  // a duplicate report
  if (record.state() == pb::CHECKPOINT_REPLICATING) {
    jobs_.AddEvent(
        *job, "checkpoint",
        fmt::format("checkpoint at step {} written on node {}: {}", record.step(), record.node_id(), record.path()));
    StartReplication(job, record);
    return;
  }
  jobs_.AddEvent(*job, "checkpoint", fmt::format("checkpoint at step {} committed: {}", record.step(), record.path()));
  ApplyRetention(*job);
}

void Coordinator::HandleCheckpointDeleted(Node& node, const pb::CheckpointDeleted& deleted) {
  if (const pb::CheckpointRecord* c = checkpoints_.Find(deleted.job_id(), deleted.step());
      c != nullptr && c->node_id() != node.record.node_id()) {
    // A copy on another node: its deletion is best effort, the record follows the node that wrote it.
    if (!deleted.ok()) {
      spdlog::warn("node {}: could not delete its copy of checkpoint {} of job {}: {}", node.record.node_id(),
                   deleted.step(), deleted.job_id(), deleted.error());
    }
    return;
  }
  if (!checkpoints_.ConfirmDeleted(deleted)) return;  // not being deleted: a duplicate or unknown
  if (Job* job = jobs_.Find(deleted.job_id())) {
    jobs_.AddEvent(*job, deleted.ok() ? "checkpoint" : "error",
                   deleted.ok() ? fmt::format("checkpoint at step {} deleted by retention", deleted.step())
                                : fmt::format("node {} could not delete checkpoint at step {}: {}",
                                              node.record.node_id(), deleted.step(), deleted.error()));
  }
}

void Coordinator::ApplyRetention(Job& job) {
  const std::string& id = job.record.job_id();
  for (const auto& record : checkpoints_.ApplyRetention(id)) {
    const Retention& policy = *checkpoints_.RetentionFor(id);
    jobs_.AddEvent(job, "checkpoint",
                   fmt::format("retention: deleting checkpoint at step {} (keep latest {}, best {} by {})",
                               record.step(), policy.save_total_limit, policy.keep_best, policy.metric));
    SendDeleteCheckpoint(job, record);
  }
}

void Coordinator::SendDeleteCheckpoint(const Job& job, const pb::CheckpointRecord& checkpoint) {
  SendDeleteCheckpointTo(job, checkpoint, checkpoint.node_id());
  for (const auto& holder : checkpoint.replica_nodes()) SendDeleteCheckpointTo(job, checkpoint, holder);
}

void Coordinator::SendDeleteCheckpointTo(const Job& job, const pb::CheckpointRecord& checkpoint,
                                         const std::string& node_id) {
  const Node* node = nodes_.Find(node_id);
  if (node == nullptr) return;
  pb::CoordinatorToAgent message;
  auto* del = message.mutable_delete_checkpoint();
  del->set_request_id(next_request_id_++);
  del->set_job_id(checkpoint.job_id());
  del->set_step(checkpoint.step());
  del->set_path(checkpoint.path());
  del->set_output_dir(job.record.output_dir());
  SendToNode(*node, std::move(message));
}

}  // namespace anneal::coordinator
