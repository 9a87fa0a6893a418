// CheckpointRegistry (coordinator/checkpoint_registry.h): committed checkpoints, resume point, retention.
#include "coordinator/checkpoint_registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

CheckpointRegistry::CheckpointRegistry(storage::WriteBatch* batch, const storage::StateStore* store)
    : batch_(batch), store_(store) {}

void CheckpointRegistry::Track(const std::string& job_id, Retention retention) {
  jobs_[job_id].retention = std::move(retention);
}

Status CheckpointRegistry::Load(const pb::JobRecord& record) {
  JobCheckpoints& job = jobs_[record.job_id()];
  auto spec = jobspec::ParseJobSpec(record.spec_yaml(), "stored spec of " + record.job_id());
  if (spec.ok()) {
    job.retention = jobspec::RetentionPolicy::Of(spec->train);
  } else {
    spdlog::warn("job {}: stored spec no longer parses ({}); checkpoint retention keeps everything", record.job_id(),
                 spec.status().ToString());
  }
  ASSIGN_OR_RETURN(auto checkpoints, Read(record.job_id()));
  for (auto& c : checkpoints) job.by_step.emplace(c.step(), std::move(c));
  return Status::Ok();
}

void CheckpointRegistry::Put(const pb::CheckpointRecord& record) {
  batch_->Put(Table::kCheckpoints, storage::JobStepKey(record.job_id(), record.step()), record);
}

bool CheckpointRegistry::RecordCommitted(const pb::CheckpointRecord& record) {
  auto it = jobs_.find(record.job_id());
  if (it == jobs_.end()) {
    pb::CheckpointRecord existing;
    const std::string key = storage::JobStepKey(record.job_id(), record.step());
    if (store_->Get(Table::kCheckpoints, key, &existing).code() == StatusCode::kNotFound) Put(record);
    return false;
  }
  auto& by_step = it->second.by_step;
  auto known = by_step.find(record.step());
  if (known != by_step.end() && known->second.state() != pb::CHECKPOINT_DELETED) return false;  // idempotent
  by_step[record.step()] = record;
  Put(record);
  return true;
}

std::optional<pb::CheckpointRecord> CheckpointRegistry::AddHolder(const std::string& job_id, uint64_t step,
                                                                  const std::string& node_id,
                                                                  std::optional<size_t> commit_with) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  auto c = it->second.by_step.find(step);
  if (c == it->second.by_step.end()) return std::nullopt;
  pb::CheckpointRecord& record = c->second;
  const auto& replicas = record.replica_nodes();
  if (!node_id.empty() && node_id != record.node_id() &&
      std::find(replicas.begin(), replicas.end(), node_id) == replicas.end()) {
    record.add_replica_nodes(node_id);
  }
  if (record.state() == pb::CHECKPOINT_REPLICATING && commit_with &&
      static_cast<size_t>(record.replica_nodes_size()) >= *commit_with) {
    record.set_state(pb::CHECKPOINT_COMMITTED);
  }
  Put(record);
  return record;
}

const pb::CheckpointRecord* CheckpointRegistry::Find(const std::string& job_id, uint64_t step) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return nullptr;
  auto c = it->second.by_step.find(step);
  return c == it->second.by_step.end() ? nullptr : &c->second;
}

const pb::CheckpointRecord* CheckpointRegistry::FindByPath(const std::string& job_id, const std::string& path) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return nullptr;
  for (const auto& [step, c] : it->second.by_step) {
    if (c.path() == path && c.state() != pb::CHECKPOINT_DELETED) return &c;
  }
  return nullptr;
}

std::vector<pb::CheckpointRecord> CheckpointRegistry::Replicating() const {
  std::vector<pb::CheckpointRecord> out;
  for (const auto& [job_id, job] : jobs_) {
    for (const auto& [step, c] : job.by_step) {
      if (c.state() == pb::CHECKPOINT_REPLICATING) out.push_back(c);
    }
  }
  return out;
}

std::vector<pb::CheckpointRecord> CheckpointRegistry::ApplyRetention(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return {};
  JobCheckpoints& job = it->second;
  std::vector<jobspec::ScoredCheckpoint> committed;
  for (const auto& [step, c] : job.by_step) {
    if (c.state() != pb::CHECKPOINT_COMMITTED) continue;
    committed.push_back({static_cast<int64_t>(step), {c.metrics().begin(), c.metrics().end()}});
  }
  std::vector<pb::CheckpointRecord> doomed;
  for (int64_t step : jobspec::StepsToDelete(job.retention, committed)) {
    pb::CheckpointRecord& record = job.by_step[static_cast<uint64_t>(step)];
    if (protects_ && protects_(record.path())) continue;  // a registered model version uses it
    record.set_state(pb::CHECKPOINT_DELETING);
    Put(record);
    doomed.push_back(record);
  }
  return doomed;
}

std::optional<pb::CheckpointRecord> CheckpointRegistry::ConfirmDeleted(const pb::CheckpointDeleted& deleted) {
  pb::CheckpointRecord stored;
  pb::CheckpointRecord* record = nullptr;
  if (auto it = jobs_.find(deleted.job_id()); it != jobs_.end()) {
    auto c = it->second.by_step.find(deleted.step());
    if (c != it->second.by_step.end()) record = &c->second;
  } else if (store_->Get(Table::kCheckpoints, storage::JobStepKey(deleted.job_id(), deleted.step()), &stored).ok()) {
    record = &stored;
  }
  if (record == nullptr || record->state() != pb::CHECKPOINT_DELETING) return std::nullopt;
  // Not deleted: the files are still there; retention tries again at the next commit.
  record->set_state(deleted.ok() ? pb::CHECKPOINT_DELETED : pb::CHECKPOINT_COMMITTED);
  Put(*record);
  return *record;
}

const pb::CheckpointRecord* CheckpointRegistry::LatestCommitted(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return nullptr;
  for (auto c = it->second.by_step.rbegin(); c != it->second.by_step.rend(); ++c) {
    if (c->second.state() == pb::CHECKPOINT_COMMITTED) return &c->second;
  }
  return nullptr;
}

// Not those the protector protects now: a model version registered after retention marked them.
std::vector<pb::CheckpointRecord> CheckpointRegistry::DeletingOn(const std::string& node_id) const {
  std::vector<pb::CheckpointRecord> out;
  for (const auto& [job_id, job] : jobs_) {
    for (const auto& [step, c] : job.by_step) {
      const bool holds = c.node_id() == node_id || std::find(c.replica_nodes().begin(), c.replica_nodes().end(),
                                                             node_id) != c.replica_nodes().end();
      if (c.state() != pb::CHECKPOINT_DELETING || !holds) continue;
      if (protects_ && protects_(c.path())) continue;  // registered as a model version since: never ordered again
      out.push_back(c);
    }
  }
  return out;
}

const Retention* CheckpointRegistry::RetentionFor(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second.retention;
}

StatusOr<std::vector<pb::CheckpointRecord>> CheckpointRegistry::Read(const std::string& job_id) const {
  std::vector<pb::CheckpointRecord> out;
  RETURN_IF_ERROR(store_->ScanRecords<pb::CheckpointRecord>(Table::kCheckpoints, storage::IdPrefix(job_id),
                                                            [&](const pb::CheckpointRecord& c) {
                                                              out.push_back(c);
                                                              return true;
                                                            }));
  return out;
}

}  // namespace anneal::coordinator
