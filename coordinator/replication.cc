// Checkpoint replicas without a shared filesystem (the state machine is drawn in coordinator/artifacts.h): a
// checkpoint written on rank 0's node counts (COMMITTED) once `checkpoint_replicas` other nodes verified a copy.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"

namespace anneal::coordinator {

bool Coordinator::ReplicationNeeded() const {
  const ArtifactOptions& a = options_.artifacts;
  return !a.shared_filesystem && a.replicas > 0 && a.signer != nullptr;
}

namespace {

bool Holds(const pb::CheckpointRecord& c, const std::string& node_id) {
  return c.node_id() == node_id ||
         std::find(c.replica_nodes().begin(), c.replica_nodes().end(), node_id) != c.replica_nodes().end();
}

}  // namespace

std::vector<std::string> Coordinator::ReplicaTargets(const Job* job, const pb::CheckpointRecord& c,
                                                     const ReplicaOrders& orders, size_t wanted) const {
  std::vector<std::string> candidates;
  if (job != nullptr) {  // the job's own nodes first: a restart there finds the checkpoint in place
    for (const auto& n : job->record.placement().nodes()) candidates.push_back(n.node_id());
  }
  for (const auto& [id, node] : nodes_.all()) candidates.push_back(id);
  std::vector<std::string> out;
  for (const auto& id : candidates) {
    if (out.size() >= wanted) break;
    const Node* node = nodes_.Find(id);
    if (node == nullptr || !node->Connected() || node->record.state() != pb::NODE_UP) continue;
    if (node->record.inventory().transfer_endpoint().empty()) continue;
    if (Holds(c, id) || orders.pending.count(id) || orders.failed.count(id)) continue;
    if (std::find(out.begin(), out.end(), id) != out.end()) continue;
    out.push_back(id);
  }
  return out;
}

void Coordinator::StartReplication(Job* job, const pb::CheckpointRecord& c) {
  ReplicaOrders& orders = replications_[{c.job_id(), c.step()}];
  const size_t have = static_cast<size_t>(c.replica_nodes_size());
  const size_t needed = static_cast<size_t>(options_.artifacts.replicas);
  if (have + orders.pending.size() >= needed) return;
  const std::vector<std::string> targets = ReplicaTargets(job, c, orders, needed - have - orders.pending.size());
  if (targets.empty() && orders.pending.empty()) {
    // Nowhere (else) to copy it: a checkpoint that never counts would make every restart start over.
    replications_.erase({c.job_id(), c.step()});
    if (auto committed = checkpoints_.AddHolder(c.job_id(), c.step(), "", /*commit_with=*/have)) {
      if (job != nullptr) {
        jobs_.AddEvent(*job, "error",
                       fmt::format("checkpoint at step {} committed with {} of {} copies on other nodes: no other "
                                   "node with a transfer endpoint is up to copy it to",
                                   c.step(), have, needed));
        ApplyRetention(*job);
      }
    }
    return;
  }
  pb::JobRecord stored;
  const pb::JobRecord* record = job != nullptr ? &job->record : nullptr;
  if (record == nullptr) {
    auto found = jobs_.GetRecord(c.job_id());
    if (!found.ok()) return;
    stored = std::move(*found);
    record = &stored;
  }
  for (const auto& target : targets) {
    pb::CoordinatorToAgent message;
    pb::ReplicateCheckpoint* order = message.mutable_replicate_checkpoint();
    order->set_job_id(c.job_id());
    order->set_step(c.step());
    if (!FillSource(c.node_id(), c.path(), "replicate", *record, order->mutable_source())) {
      if (job != nullptr) {
        jobs_.AddEvent(*job, "error",
                       fmt::format("checkpoint at step {}: its node {} serves no transfers; not replicated", c.step(),
                                   c.node_id()));
      }
      return;
    }
    order->mutable_source()->set_key("checkpoint");
    order->mutable_source()->set_dest_path(c.path());
    order->set_output_dir(record->output_dir());
    order->set_team(JobTeam(*record));
    *order->mutable_files() = c.files();
    orders.pending[target] = clock_->NowMs();
    SendToNode(*nodes_.Find(target), std::move(message));
  }
  if (job != nullptr && !targets.empty()) {
    jobs_.AddEvent(*job, "checkpoint",
                   fmt::format("checkpoint at step {}: copying to {}", c.step(), fmt::join(targets, ", ")));
  }
}

void Coordinator::HandleCheckpointReplicated(Node& node, const pb::CheckpointReplicated& done) {
  const std::string& id = node.record.node_id();
  auto it = replications_.find({done.job_id(), done.step()});
  if (it == replications_.end() || it->second.pending.erase(id) == 0) return;  // not ordered (or a duplicate)
  Job* job = jobs_.Find(done.job_id());
  if (!done.ok()) {
    it->second.failed.insert(id);
    if (job != nullptr) {
      jobs_.AddEvent(*job, "error",
                     fmt::format("node {} could not copy checkpoint at step {}: {}", id, done.step(), done.error()));
    }
  } else {
    auto record = checkpoints_.AddHolder(done.job_id(), done.step(), id, options_.artifacts.replicas);
    if (record && record->state() == pb::CHECKPOINT_COMMITTED) {
      replications_.erase(it);
      if (job != nullptr) {
        jobs_.AddEvent(*job, "checkpoint",
                       fmt::format("checkpoint at step {} committed: {} (copies on {})", done.step(), record->path(),
                                   fmt::join(record->replica_nodes(), ", ")));
        ApplyRetention(*job);
      }
      return;
    }
  }
  if (const pb::CheckpointRecord* c = checkpoints_.Find(done.job_id(), done.step());
      c != nullptr && c->state() == pb::CHECKPOINT_REPLICATING) {
    StartReplication(job, *c);  // another target for a failed one, or nothing when enough are under way
  }
}

void Coordinator::TickReplication() {
  if (!ReplicationNeeded()) return;
  const int64_t now = clock_->NowMs();
  std::erase_if(replications_, [&](const auto& entry) { return !checkpoints_.Tracks(entry.first.first); });
  for (auto& [key, orders] : replications_) {
    for (auto p = orders.pending.begin(); p != orders.pending.end();) {
      if (now - p->second < kReplicaTimeoutMs) {
        ++p;
        continue;
      }
      spdlog::warn("job {}: node {} did not answer the copy of checkpoint {} within {} ms; trying another node",
                   key.first, p->first, key.second, kReplicaTimeoutMs);
      orders.failed.insert(p->first);
      p = orders.pending.erase(p);
    }
  }
  // Every REPLICATING checkpoint has its orders (also those a restarted coordinator found in its store).
  for (const pb::CheckpointRecord& c : checkpoints_.Replicating()) StartReplication(jobs_.Find(c.job_id()), c);
}

}  // namespace anneal::coordinator
