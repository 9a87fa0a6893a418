// The agent channel: registration and re-adoption, heartbeats and failure detection, sequenced reports.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>

#include "coordinator/coordinator.h"
#include "protocol/states.h"
#include "transfer/ticket.h"

namespace anneal::coordinator {

namespace {

pb::CoordinatorToAgent ErrorMessage(StatusCode code, const std::string& text) {
  pb::CoordinatorToAgent message;
  message.mutable_error()->set_code(static_cast<pb::ErrorCode>(code));
  message.mutable_error()->set_message(text);
  return message;
}

}  // namespace

// The task of `node_id` in the job's current epoch, still running as far as the coordinator knows.
bool Coordinator::IsCurrentTask(const Job* job, const std::string& node_id, uint64_t epoch) const {
  if (job == nullptr || epoch != job->record.epoch()) return false;
  auto task = job->record.task_states().find(node_id);
  return task != job->record.task_states().end() && !protocol::TaskEnded(task->second);
}

void Coordinator::SendToPeer(const std::string& peer, pb::CoordinatorToAgent message) {
  outbox_.push_back({peer, std::move(message)});
}

void Coordinator::SendToNode(const Node& node, pb::CoordinatorToAgent message) {
  // Not connected to this process yet: the order is re-derived when the agent registers (at-least-once).
  if (!node.Connected()) return;
  outbox_.push_back({node.routing_id, std::move(message)});
}

void Coordinator::SendStop(const Node& node, const std::string& job_id, uint64_t epoch, const std::string& reason) {
  pb::CoordinatorToAgent message;
  message.mutable_stop()->set_job_id(job_id);
  message.mutable_stop()->set_epoch(epoch);
  message.mutable_stop()->set_grace_ms(10000);
  message.mutable_stop()->set_reason(reason);
  SendToNode(node, std::move(message));
}

void Coordinator::HandleRegister(const std::string& peer, const pb::RegisterRequest& request) {
  // Bounds first (nothing unbounded is looked at), then the credential (coordinator/node_identity.cc): a refusal
  // leaves the node id's record and routing as they were.
  if (Status valid = nodes_.Validate(request); !valid.ok()) {
    RefuseRegister(peer, request, valid);
    return;
  }
  std::string credential;
  auto identity = Authenticate(request, &credential);
  if (!identity.ok()) {
    RefuseRegister(peer, request, identity.status());
    return;
  }
  const bool was_known = nodes_.Find(request.node_id()) != nullptr;
  auto registered = nodes_.Register(peer, request, identity->has_value() ? &**identity : nullptr);
  if (!registered.ok()) {
    RefuseRegister(peer, request, registered.status());
    return;
  }
  Node& node = **registered;
  if (identity->has_value()) {
    join_tokens_.CountJoin((*identity)->joined_with);
    spdlog::info("node {} joined with join token {}", request.node_id(), (*identity)->joined_with);
  }
  const std::string& id = node.record.node_id();
  spdlog::info("node {} registered ({} slot(s), session {}, {} running task(s){})", id, request.inventory().slots(),
               node.record.session(), request.running_tasks_size(), was_known ? "" : ", new");

  pb::CoordinatorToAgent reply;
  auto* r = reply.mutable_register_reply();
  r->set_accepted(true);
  r->set_heartbeat_interval_ms(static_cast<uint32_t>(options_.heartbeat_interval_ms));
  if (options_.artifacts.signer) r->set_transfer_signer_key(options_.artifacts.signer->public_key());
  r->set_session(node.record.session());
  r->set_last_acked_seq(node.last_applied_seq);
  r->set_node_credential(credential);  // only on a join: shown once
  SendToPeer(peer, std::move(reply));

  // Re-adoption: tasks of the current epoch continue; anything older is told to stop.
  std::set<std::string> reported;
  for (const auto& task : request.running_tasks()) {
    if (!IsCurrentTask(jobs_.Find(task.job_id()), id, task.epoch())) {
      if (!protocol::TaskEnded(task.state())) {
        SendStop(node, task.job_id(), task.epoch(), "stale task: its epoch is no longer current");
      }
      continue;
    }
    reported.insert(task.job_id());
    ApplyTaskStatus(node, task);
  }
  ReadoptDisconnectedTasks(node, reported);
  ResendMissedOrders(node, reported);
  schedule_dirty_ = true;
}

// Orders the agent may have missed while disconnected: deletions of checkpoints, stops of gangs being torn
// down, launches (at-least-once; the agent dedups by epoch) of tasks it did not report.
void Coordinator::ResendMissedOrders(Node& node, const std::set<std::string>& reported) {
  const std::string& id = node.record.node_id();
  for (const auto& checkpoint : checkpoints_.DeletingOn(id)) {
    if (const Job* job = jobs_.Find(checkpoint.job_id())) SendDeleteCheckpointTo(*job, checkpoint, id);
  }
  const int64_t now = clock_->NowMs();
  const std::set<std::string> on_node = node.task_jobs;
  for (const auto& job_id : on_node) {
    Job* job = jobs_.Find(job_id);
    if (job == nullptr) continue;
    auto task = job->record.task_states().find(id);
    if (task == job->record.task_states().end() || protocol::TaskEnded(task->second)) continue;
    job->task_last_seen_ms[id] = now;
    const pb::JobState state = job->record.state();
    if (state == pb::JOB_RESTARTING || state == pb::JOB_CANCELLING) {
      SendStop(node, job_id, job->record.epoch(), "the job is stopping");
    } else if (state == pb::JOB_PREEMPTED) {
      PreemptGang(*job);  // idempotent on the agent: the first deadline stands
    } else if (task->second == pb::TASK_LAUNCHING && !reported.count(job_id)) {
      SendLaunch(*job, id);
    }
  }
}

void Coordinator::HandleHeartbeat(const std::string& peer, const pb::Heartbeat& heartbeat) {
  Node* node = nodes_.FindByPeer(peer);
  if (node == nullptr || node->record.node_id() != heartbeat.node_id() ||
      node->record.session() != heartbeat.session() || node->record.state() == pb::NODE_DOWN) {
    SendToPeer(peer, ErrorMessage(StatusCode::kFailedPrecondition,
                                  fmt::format("heartbeat from node '{}' session {}: not registered with this "
                                              "coordinator (restarted, or the node was declared down); register "
                                              "again",
                                              heartbeat.node_id(), heartbeat.session())));
    return;
  }
  if (static_cast<uint32_t>(heartbeat.tasks_size()) > nodes_.limits().max_running_tasks) {
    SendToPeer(peer, ErrorMessage(
                         StatusCode::kInvalidArgument,
                         fmt::format("heartbeat from node '{}' lists {} tasks (at most {}): refused",
                                     heartbeat.node_id(), heartbeat.tasks_size(), nodes_.limits().max_running_tasks)));
    return;
  }
  nodes_.Heartbeat(*node, heartbeat);
  const int64_t now = clock_->NowMs();
  const std::string& id = node->record.node_id();
  std::set<std::string> listed;
  for (const auto& task : heartbeat.tasks()) {
    Job* job = jobs_.Find(task.job_id());
    if (IsCurrentTask(job, id, task.epoch())) {
      listed.insert(task.job_id());
      job->task_last_seen_ms[id] = now;
    } else if (!protocol::TaskEnded(task.state())) {
      SendStop(*node, task.job_id(), task.epoch(), "stale task: its epoch is no longer current");
    }
  }
  // A task this node should be running that it stopped listing for a whole heartbeat timeout is gone
  // (the agent restarted without it, or its launch never happened).
  const std::set<std::string> on_node = node->task_jobs;  // a copy: SetTaskState edits the index
  for (const auto& job_id : on_node) {
    Job* job = jobs_.Find(job_id);
    if (job == nullptr) continue;
    auto task = job->record.task_states().find(id);
    if (task == job->record.task_states().end() || protocol::TaskEnded(task->second) || listed.count(job_id)) {
      continue;
    }
    if (now - job->task_last_seen_ms[id] <= options_.heartbeat_timeout_ms) continue;
    LoseTask(*job, id, fmt::format("node {} no longer reports the job's task", id));
    Reconcile(*job);
  }
}

void Coordinator::HandleSequenced(const std::string& peer, uint64_t seq, const pb::AgentToCoordinator& message) {
  Node* node = nodes_.FindByPeer(peer);
  if (node == nullptr || node->record.state() == pb::NODE_DOWN) {
    SendToPeer(peer, ErrorMessage(StatusCode::kFailedPrecondition,
                                  fmt::format("report seq {} from a peer that is not registered with this "
                                              "coordinator; register again, then resend",
                                              seq)));
    return;
  }
  const std::string& id = node->record.node_id();
  if (!nodes_.SeqInWindow(*node, seq)) {
    // Applying it would make every later report look like a resend: refused, not acknowledged, not recorded.
    spdlog::warn("node {}: refused report seq {}: more than {} past its last applied seq {}", id, seq,
                 nodes_.limits().max_seq_ahead, node->last_applied_seq);
    SendToPeer(peer, ErrorMessage(StatusCode::kInvalidArgument,
                                  fmt::format("report seq {} from node {} is more than {} (max_seq_ahead) past its "
                                              "last applied seq {}: refused",
                                              seq, id, nodes_.limits().max_seq_ahead, node->last_applied_seq)));
    return;
  }
  // A resend of an applied report is not applied again. A report the node may not send (coordinator/node_identity.cc)
  // is logged and applied to nothing, but its seq is consumed and acknowledged like any other.
  if (nodes_.ApplySeq(*node, seq)) {
    if (std::string foreign = ForeignReport(*node, message); !foreign.empty()) {
      spdlog::warn("node {}: ignored report seq {}: {}", id, seq, foreign);
    } else {
      switch (message.body_case()) {
        case pb::AgentToCoordinator::kTaskUpdate:
          ApplyTaskStatus(*node, message.task_update().status());
          break;
        case pb::AgentToCoordinator::kCheckpointCommitted:
          HandleCheckpointCommitted(*node, message.checkpoint_committed().checkpoint());
          break;
        case pb::AgentToCoordinator::kMetricBatch:
          HandleMetricBatch(message.metric_batch());
          break;
        case pb::AgentToCoordinator::kCheckpointDeleted:
          HandleCheckpointDeleted(*node, message.checkpoint_deleted());
          break;
        case pb::AgentToCoordinator::kCheckpointReplicated:
          HandleCheckpointReplicated(*node, message.checkpoint_replicated());
          break;
        default:
          break;
      }
    }
  }
  // Duplicates are acked too: the agent stops resending.
  pb::CoordinatorToAgent ack;
  ack.mutable_ack()->set_seq(seq);
  SendToPeer(peer, std::move(ack));
}

namespace {

// How a preempted task ended, from the agent's report (docs/agent.md, "Preemption").
std::string PreemptedTaskText(const std::string& node_id, const pb::TaskStatus& status) {
  if (status.exit_code() == protocol::kPreemptedExitCode) {
    return fmt::format("task on node {} checkpointed and stopped", node_id);
  }
  if (status.signal() == SIGKILL) {
    return fmt::format(
        "task on node {} did not stop within the grace period: killed; the job resumes from its last "
        "committed checkpoint",
        node_id);
  }
  if (status.signal() != 0) {
    return fmt::format(
        "task on node {} died of signal {} on the preemption request (a rank without a handler); the "
        "job resumes from its last committed checkpoint",
        node_id, status.signal());
  }
  return fmt::format(
      "task on node {} ended after the preemption request (exit status unknown: its agent restarted); "
      "the job resumes from its last committed checkpoint",
      node_id);
}

}  // namespace

void Coordinator::ApplyTaskStatus(Node& node, const pb::TaskStatus& status) {
  const std::string& node_id = node.record.node_id();
  Job* found = jobs_.Find(status.job_id());
  if (!IsCurrentTask(found, node_id, status.epoch())) {
    // Unknown job or another epoch: ignored. A stale task still alive is told to stop.
    if (found == nullptr || !found->record.task_states().count(node_id)) {
      spdlog::warn("node {}: ignored a status of job {} epoch {}, which has no task on it", node_id,
                   status.job_id().substr(0, 64), status.epoch());
    }
    if (!protocol::TaskEnded(status.state())) {
      SendStop(node, status.job_id(), status.epoch(), "stale task: its epoch is no longer current");
    }
    return;
  }
  Job& job = *found;
  const pb::JobState state = job.record.state();
  job.task_last_seen_ms[node_id] = clock_->NowMs();
  const bool stopping = state == pb::JOB_CANCELLING || state == pb::JOB_RESTARTING || state == pb::JOB_PREEMPTED;
  if (status.state() == pb::TASK_PREEMPTED && state == pb::JOB_PREEMPTED) {
    jobs_.AddEvent(job, "preemption", PreemptedTaskText(node_id, status));
  } else if (status.state() == pb::TASK_FAILED || status.state() == pb::TASK_PREEMPTED ||
             (status.state() == pb::TASK_STOPPED && !stopping)) {
    std::string what =
        fmt::format("task on node {} {}", node_id, status.state() == pb::TASK_FAILED ? "failed" : "stopped");
    if (status.exit_code() != 0) what += fmt::format(" (exit code {})", status.exit_code());
    if (status.signal() != 0) what += fmt::format(" (signal {})", status.signal());
    if (!status.message().empty()) what += ": " + status.message();
    if (state == pb::JOB_STARTING || state == pb::JOB_RUNNING) job.record.set_result(what);
    jobs_.AddEvent(job, "error", what);
  }
  if (status.state() == pb::TASK_LAUNCHING || status.state() == pb::TASK_STATE_UNSPECIFIED) return;
  SetTaskState(job, node_id, status.state());
  Reconcile(job);
}

void Coordinator::DetectFailedNodes() {
  const int64_t now = clock_->NowMs();
  for (const auto& id : nodes_.SilentNodes(options_.heartbeat_timeout_ms)) {
    Node& node = *nodes_.Find(id);
    MarkNodeDown(node, fmt::format("node {} silent for {} ms (timeout {} ms)", id, now - node.last_heartbeat_ms,
                                   options_.heartbeat_timeout_ms));
  }
  ExpireDisconnectedTasks();
}

void Coordinator::MarkNodeDown(Node& node, const std::string& reason, bool may_reconnect) {
  spdlog::warn("{}: marking it down", reason);
  const std::string id = node.record.node_id();
  nodes_.MarkDown(node);
  const std::set<std::string> on_node = node.task_jobs;  // a copy: SetTaskState edits the index
  for (const auto& job_id : on_node) {
    Job* job = jobs_.Find(job_id);
    if (job == nullptr) continue;
    auto task = job->record.task_states().find(id);
    if (task == job->record.task_states().end() || protocol::TaskEnded(task->second)) continue;
    if (may_reconnect && KeepDisconnectedTask(*job, id, reason)) continue;  // reconnect grace (reconnect.cc)
    LoseTask(*job, id, reason + ": task lost");
    Reconcile(*job);
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
