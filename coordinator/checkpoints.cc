// The checkpoint registry: committed checkpoints recorded idempotently by (job, step), the latest committed
// one handed to restarted attempts, and retention (keep the latest N and the best K; the agent deletes the
// files first, the record is marked deleted only when it confirms).
#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/coordinator.h"
#include "coordinator/job_state_machine.h"
#include "jobspec/retention.h"
#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

void Coordinator::HandleCheckpointCommitted(NodeRuntime& node, const pb::CheckpointRecord& reported) {
  pb::CheckpointRecord record = reported;
  record.set_state(pb::CHECKPOINT_COMMITTED);
  record.set_node_id(node.record.node_id());
  if (record.committed_at_ms() == 0) record.set_committed_at_ms(clock_->NowMs());
  const std::string key = storage::JobStepKey(record.job_id(), record.step());

  auto it = jobs_.find(record.job_id());
  if (it == jobs_.end()) {
    // A late report for a job that already ended: record it once, no retention.
    pb::CheckpointRecord existing;
    if (store_->Get(Table::kCheckpoints, key, &existing).code() == StatusCode::kNotFound &&
        GetJobRecord(record.job_id()).ok()) {
      batch_.Put(Table::kCheckpoints, key, record);
    }
    return;
  }
  JobRuntime& job = it->second;
  auto known = job.checkpoints.find(record.step());
  if (known != job.checkpoints.end() && known->second.state() != pb::CHECKPOINT_DELETED) return;  // idempotent
  job.checkpoints[record.step()] = record;
  batch_.Put(Table::kCheckpoints, key, record);
  AddEvent(job, "checkpoint", fmt::format("checkpoint at step {} committed: {}", record.step(), record.path()));
  ApplyRetention(job);
}

void Coordinator::HandleCheckpointDeleted(NodeRuntime& node, const pb::CheckpointDeleted& deleted) {
  const std::string key = storage::JobStepKey(deleted.job_id(), deleted.step());
  auto it = jobs_.find(deleted.job_id());
  pb::CheckpointRecord stored;
  pb::CheckpointRecord* record = nullptr;
  if (it != jobs_.end()) {
    auto c = it->second.checkpoints.find(deleted.step());
    if (c != it->second.checkpoints.end()) record = &c->second;
  } else if (store_->Get(Table::kCheckpoints, key, &stored).ok()) {
    record = &stored;
  }
  if (record == nullptr || record->state() != pb::CHECKPOINT_DELETING) return;
  if (deleted.ok()) {
    record->set_state(pb::CHECKPOINT_DELETED);
  } else {
    record->set_state(pb::CHECKPOINT_COMMITTED);  // files still there; retention retries at the next commit
  }
  batch_.Put(Table::kCheckpoints, key, *record);
  if (it != jobs_.end()) {
    AddEvent(it->second, deleted.ok() ? "checkpoint" : "error",
             deleted.ok() ? fmt::format("checkpoint at step {} deleted by retention", deleted.step())
                          : fmt::format("node {} could not delete checkpoint at step {}: {}",
                                        node.record.node_id(), deleted.step(), deleted.error()));
  }
}

void Coordinator::ApplyRetention(JobRuntime& job) {
  const jobspec::RetentionPolicy& policy = job.retention;
  std::vector<jobspec::ScoredCheckpoint> committed;
  for (const auto& [step, c] : job.checkpoints) {
    if (c.state() != pb::CHECKPOINT_COMMITTED) continue;
    committed.push_back({static_cast<int64_t>(step), {c.metrics().begin(), c.metrics().end()}});
  }
  for (int64_t step : jobspec::StepsToDelete(policy, committed)) {
    pb::CheckpointRecord& record = job.checkpoints[static_cast<uint64_t>(step)];
    record.set_state(pb::CHECKPOINT_DELETING);
    batch_.Put(Table::kCheckpoints, storage::JobStepKey(record.job_id(), record.step()), record);
    AddEvent(job, "checkpoint", fmt::format("retention: deleting checkpoint at step {} (keep latest {}, best {} by "
                                            "{})", record.step(), policy.save_total_limit, policy.keep_best,
                                            policy.metric));
    SendDeleteCheckpoint(job, record);
  }
}

void Coordinator::SendDeleteCheckpoint(const JobRuntime& job, const pb::CheckpointRecord& checkpoint) {
  auto node = nodes_.find(checkpoint.node_id());
  if (node == nodes_.end()) return;
  pb::CoordinatorToAgent message;
  auto* del = message.mutable_delete_checkpoint();
  del->set_request_id(next_request_id_++);
  del->set_job_id(checkpoint.job_id());
  del->set_step(checkpoint.step());
  del->set_path(checkpoint.path());
  del->set_output_dir(job.record.output_dir());
  SendToNode(node->second, std::move(message));
}

const pb::CheckpointRecord* Coordinator::LatestCommittedCheckpoint(const JobRuntime& job) const {
  for (auto it = job.checkpoints.rbegin(); it != job.checkpoints.rend(); ++it) {
    if (it->second.state() == pb::CHECKPOINT_COMMITTED) return &it->second;
  }
  return nullptr;
}

StatusOr<std::vector<pb::CheckpointRecord>> Coordinator::ReadCheckpoints(const std::string& job_id) const {
  std::vector<pb::CheckpointRecord> out;
  RETURN_IF_ERROR(store_->ScanRecords<pb::CheckpointRecord>(Table::kCheckpoints, storage::IdPrefix(job_id),
                                                            [&](const pb::CheckpointRecord& c) {
                                                              out.push_back(c);
                                                              return true;
                                                            }));
  return out;
}

}  // namespace anneal::coordinator
