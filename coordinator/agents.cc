// The agent channel: registration and re-adoption, heartbeats and failure detection, sequenced reports.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/coordinator.h"
#include "coordinator/job_state_machine.h"
#include "coordinator/store_keys.h"

namespace anneal::coordinator {

using storage::Table;

namespace {

pb::CoordinatorToAgent ErrorMessage(StatusCode code, const std::string& text) {
  pb::CoordinatorToAgent message;
  message.mutable_error()->set_code(static_cast<pb::ErrorCode>(code));
  message.mutable_error()->set_message(text);
  return message;
}

}  // namespace

// The task of `node_id` in the job's current epoch, still running as far as the coordinator knows.
bool Coordinator::IsCurrentTask(std::map<std::string, JobRuntime>::const_iterator job, const std::string& node_id,
                                uint64_t epoch) const {
  if (job == jobs_.end() || epoch != job->second.record.epoch()) return false;
  auto task = job->second.record.task_states().find(node_id);
  return task != job->second.record.task_states().end() && !protocol::TaskEnded(task->second);
}

Coordinator::NodeRuntime* Coordinator::NodeByPeer(const std::string& peer) {
  auto it = node_by_peer_.find(peer);
  if (it == node_by_peer_.end()) return nullptr;
  auto node = nodes_.find(it->second);
  return node == nodes_.end() ? nullptr : &node->second;
}

void Coordinator::SendToPeer(const std::string& peer, pb::CoordinatorToAgent message) {
  outbox_.push_back({peer, std::move(message)});
}

void Coordinator::SendToNode(const NodeRuntime& node, pb::CoordinatorToAgent message) {
  // Not connected to this process yet: the order is re-derived when the agent registers (at-least-once).
  if (node.routing_id.empty() || node.record.state() == pb::NODE_DOWN) return;
  outbox_.push_back({node.routing_id, std::move(message)});
}

void Coordinator::SendStop(const NodeRuntime& node, const std::string& job_id, uint64_t epoch,
                           const std::string& reason) {
  pb::CoordinatorToAgent message;
  message.mutable_stop()->set_job_id(job_id);
  message.mutable_stop()->set_epoch(epoch);
  message.mutable_stop()->set_grace_ms(10000);
  message.mutable_stop()->set_reason(reason);
  SendToNode(node, std::move(message));
}

void Coordinator::PersistNode(const NodeRuntime& node) {
  batch_.Put(Table::kNodes, node.record.node_id(), node.record);
}

void Coordinator::HandleRegister(const std::string& peer, const pb::RegisterRequest& request) {
  const std::string& id = request.node_id();
  std::string problem;
  if (id.empty() || id.find('\0') != std::string::npos) problem = "register: node_id must be a non-empty name";
  else if (request.inventory().slots() == 0) problem = fmt::format("register: node {} offers 0 slots", id);
  if (!problem.empty()) {
    SendToPeer(peer, ErrorMessage(StatusCode::kInvalidArgument, problem));
    return;
  }
  const int64_t now = clock_->NowMs();
  NodeRuntime& node = nodes_[id];
  const bool was_known = node.record.node_id() == id;
  const pb::NodeState previous = node.record.state();
  if (!node.routing_id.empty()) node_by_peer_.erase(node.routing_id);
  if (auto other = node_by_peer_.find(peer); other != node_by_peer_.end() && other->second != id) {
    nodes_[other->second].routing_id.clear();
  }
  node.routing_id = peer;
  node_by_peer_[peer] = id;
  node.last_heartbeat_ms = now;
  node.record.set_node_id(id);
  *node.record.mutable_inventory() = request.inventory();
  node.record.set_state(previous == pb::NODE_DRAINING ? pb::NODE_DRAINING : pb::NODE_UP);
  node.record.set_registered_at_ms(now);
  node.record.set_last_heartbeat_ms(now);
  node.record.set_agent_version(request.agent_version());
  node.record.set_session(node.record.session() + 1);
  PersistNode(node);
  spdlog::info("node {} registered ({} slot(s), session {}, {} running task(s){})", id,
               request.inventory().slots(), node.record.session(), request.running_tasks_size(),
               was_known ? "" : ", new");

  pb::CoordinatorToAgent reply;
  auto* r = reply.mutable_register_reply();
  r->set_accepted(true);
  r->set_heartbeat_interval_ms(static_cast<uint32_t>(options_.heartbeat_interval_ms));
  r->set_session(node.record.session());
  r->set_last_acked_seq(node.last_applied_seq);
  SendToPeer(peer, std::move(reply));

  // Re-adoption: tasks of the current epoch continue; anything older is told to stop.
  std::set<std::string> reported;
  for (const auto& task : request.running_tasks()) {
    auto job = jobs_.find(task.job_id());
    const bool current = IsCurrentTask(job, id, task.epoch());
    if (!current) {
      if (!protocol::TaskEnded(task.state())) {
        SendStop(node, task.job_id(), task.epoch(), "stale task: its epoch is no longer current");
      }
      continue;
    }
    reported.insert(task.job_id());
    ApplyTaskStatus(node, task);
  }
  // Orders the agent may have missed while disconnected: launches (at-least-once; the agent dedups by epoch),
  // stops of gangs being torn down, deletions of checkpoints.
  for (auto& [job_id, job] : jobs_) {
    for (const auto& [step, checkpoint] : job.checkpoints) {
      if (checkpoint.state() == pb::CHECKPOINT_DELETING && checkpoint.node_id() == id) {
        SendDeleteCheckpoint(job, checkpoint);
      }
    }
  }
  const std::set<std::string> on_node = node.task_jobs;
  for (const auto& job_id : on_node) {
    auto found = jobs_.find(job_id);
    if (found == jobs_.end()) continue;
    JobRuntime& job = found->second;
    auto task = job.record.task_states().find(id);
    if (task == job.record.task_states().end() || protocol::TaskEnded(task->second)) continue;
    job.task_last_seen_ms[id] = now;
    const pb::JobState state = job.record.state();
    if (state == pb::JOB_RESTARTING || state == pb::JOB_CANCELLING) {
      SendStop(node, job_id, job.record.epoch(), "the job is stopping");
    } else if (task->second == pb::TASK_LAUNCHING && !reported.count(job_id)) {
      SendLaunch(job, id);
    }
  }
  schedule_dirty_ = true;
}

void Coordinator::HandleHeartbeat(const std::string& peer, const pb::Heartbeat& heartbeat) {
  NodeRuntime* node = NodeByPeer(peer);
  if (node == nullptr || node->record.node_id() != heartbeat.node_id() ||
      node->record.session() != heartbeat.session() || node->record.state() == pb::NODE_DOWN) {
    SendToPeer(peer, ErrorMessage(StatusCode::kFailedPrecondition,
                                  fmt::format("heartbeat from node '{}' session {}: not registered with this "
                                              "coordinator (restarted, or the node was declared down); register "
                                              "again", heartbeat.node_id(), heartbeat.session())));
    return;
  }
  const int64_t now = clock_->NowMs();
  node->last_heartbeat_ms = now;
  for (const auto& gpu : heartbeat.gpus()) {
    for (auto& known : *node->record.mutable_inventory()->mutable_gpus()) {
      if (known.index() == gpu.index()) known = gpu;
    }
  }
  const std::string& id = node->record.node_id();
  std::set<std::string> listed;
  for (const auto& task : heartbeat.tasks()) {
    auto job = jobs_.find(task.job_id());
    const bool current = IsCurrentTask(job, id, task.epoch());
    if (current) {
      listed.insert(task.job_id());
      job->second.task_last_seen_ms[id] = now;
    } else if (!protocol::TaskEnded(task.state())) {
      SendStop(*node, task.job_id(), task.epoch(), "stale task: its epoch is no longer current");
    }
  }
  // A task this node should be running that it stopped listing for a whole heartbeat timeout is gone
  // (the agent restarted without it, or its launch never happened).
  const std::set<std::string> on_node = node->task_jobs;  // a copy: SetTaskState edits the index
  for (const auto& job_id : on_node) {
    auto found = jobs_.find(job_id);
    if (found == jobs_.end()) continue;
    JobRuntime& job = found->second;
    auto task = job.record.task_states().find(id);
    if (task == job.record.task_states().end() || protocol::TaskEnded(task->second) || listed.count(job_id)) continue;
    if (now - job.task_last_seen_ms[id] <= options_.heartbeat_timeout_ms) continue;
    job.record.set_result(fmt::format("node {} no longer reports the job's task", id));
    AddEvent(job, "error", job.record.result());
    SetTaskState(job, id, pb::TASK_LOST);
    Reconcile(job);
  }
}

void Coordinator::HandleSequenced(const std::string& peer, uint64_t seq, const pb::AgentToCoordinator& message) {
  NodeRuntime* node = NodeByPeer(peer);
  if (node == nullptr || node->record.state() == pb::NODE_DOWN) {
    SendToPeer(peer, ErrorMessage(StatusCode::kFailedPrecondition,
                                  fmt::format("report seq {} from a peer that is not registered with this "
                                              "coordinator; register again, then resend", seq)));
    return;
  }
  if (seq > node->last_applied_seq) {
    switch (message.body_case()) {
      case pb::AgentToCoordinator::kTaskUpdate: ApplyTaskStatus(*node, message.task_update().status()); break;
      case pb::AgentToCoordinator::kCheckpointCommitted:
        HandleCheckpointCommitted(*node, message.checkpoint_committed().checkpoint());
        break;
      case pb::AgentToCoordinator::kMetricBatch: HandleMetricBatch(message.metric_batch()); break;
      case pb::AgentToCoordinator::kCheckpointDeleted:
        HandleCheckpointDeleted(*node, message.checkpoint_deleted());
        break;
      default: break;
    }
    node->last_applied_seq = seq;
    batch_.PutU64(Table::kMeta, NodeSeqKey(node->record.node_id()), seq);
  }
  // Duplicates are acked too: the agent stops resending.
  pb::CoordinatorToAgent ack;
  ack.mutable_ack()->set_seq(seq);
  SendToPeer(peer, std::move(ack));
}

void Coordinator::ApplyTaskStatus(NodeRuntime& node, const pb::TaskStatus& status) {
  const std::string& node_id = node.record.node_id();
  auto it = jobs_.find(status.job_id());
  if (!IsCurrentTask(it, node_id, status.epoch())) {
    // Unknown job or another epoch: ignored. A stale task still alive is told to stop.
    if (!protocol::TaskEnded(status.state())) {
      SendStop(node, status.job_id(), status.epoch(), "stale task: its epoch is no longer current");
    }
    return;
  }
  JobRuntime& job = it->second;
  job.task_last_seen_ms[node_id] = clock_->NowMs();
  if (status.state() == pb::TASK_FAILED || (status.state() == pb::TASK_STOPPED &&
                                            job.record.state() != pb::JOB_CANCELLING &&
                                            job.record.state() != pb::JOB_RESTARTING)) {
    std::string what = fmt::format("task on node {} {}", node_id,
                                   status.state() == pb::TASK_FAILED ? "failed" : "stopped");
    if (status.exit_code() != 0) what += fmt::format(" (exit code {})", status.exit_code());
    if (status.signal() != 0) what += fmt::format(" (signal {})", status.signal());
    if (!status.message().empty()) what += ": " + status.message();
    if (job.record.state() == pb::JOB_STARTING || job.record.state() == pb::JOB_RUNNING) {
      job.record.set_result(what);
    }
    AddEvent(job, "error", what);
  }
  if (status.state() == pb::TASK_LAUNCHING || status.state() == pb::TASK_STATE_UNSPECIFIED) return;
  SetTaskState(job, node_id, status.state());
  Reconcile(job);
}

void Coordinator::DetectFailedNodes() {
  const int64_t now = clock_->NowMs();
  for (auto& [id, node] : nodes_) {
    if (node.record.state() == pb::NODE_DOWN) continue;
    if (now - node.last_heartbeat_ms <= options_.heartbeat_timeout_ms) continue;
    MarkNodeDown(node, fmt::format("node {} silent for {} ms (timeout {} ms)", id, now - node.last_heartbeat_ms,
                                   options_.heartbeat_timeout_ms));
  }
}

void Coordinator::MarkNodeDown(NodeRuntime& node, const std::string& reason) {
  spdlog::warn("{}: marking it down", reason);
  const std::string id = node.record.node_id();
  node.record.set_state(pb::NODE_DOWN);
  node.record.set_last_heartbeat_ms(node.last_heartbeat_ms);
  if (!node.routing_id.empty()) node_by_peer_.erase(node.routing_id);
  node.routing_id.clear();
  PersistNode(node);
  const std::set<std::string> on_node = node.task_jobs;  // a copy: SetTaskState edits the index
  for (const auto& job_id : on_node) {
    auto found = jobs_.find(job_id);
    if (found == jobs_.end()) continue;
    JobRuntime& job = found->second;
    auto task = job.record.task_states().find(id);
    if (task == job.record.task_states().end() || protocol::TaskEnded(task->second)) continue;
    if (job.record.state() == pb::JOB_STARTING || job.record.state() == pb::JOB_RUNNING) {
      job.record.set_result(reason + ": task lost");
    }
    AddEvent(job, "error", reason + ": task lost");
    SetTaskState(job, id, pb::TASK_LOST);
    Reconcile(job);
  }
  // Log requests waiting on this node cannot be answered.
  for (auto it = log_requests_.begin(); it != log_requests_.end();) {
    if (it->second.node_id == id) {
      ReplyError(it->second.peer, it->second.client_request_id, UnavailableError(reason + ": logs unavailable"));
      it = log_requests_.erase(it);
    } else {
      ++it;
    }
  }
  schedule_dirty_ = true;
}

}  // namespace anneal::coordinator
