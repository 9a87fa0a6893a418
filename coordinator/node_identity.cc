// Node identity (docs/architecture.md "Node identity"): join tokens, the credential check at Register, which
// reports a node may send, and node removal.
//
// A refused registration changes nothing: the node id keeps its record, its routing and its session. A report
// a node may not send (a job with no task of that node in that epoch, a checkpoint path outside the job's
// output directory, a deletion nobody ordered) is logged, applied to nothing, and acknowledged like a
// duplicate: its seq is consumed, so the sender's stream goes on (an Error would make a real agent with a late
// report re-register and resend it forever).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/secret.h"
#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "protocol/states.h"

namespace anneal::coordinator {

namespace {

std::string NormalPath(const std::string& path) {
  std::string out = std::filesystem::path(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string Printable(const std::string& text) {  // an attacker's string, cut for a log line or an error
  std::string out = text.substr(0, 64);
  for (char& c : out) {
    if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
  }
  return out;
}

}  // namespace

StatusOr<std::optional<NodeIdentity>> Coordinator::Authenticate(const pb::RegisterRequest& request,
                                                                std::string* credential) {
  const std::string& id = request.node_id();
  const Node* existing = nodes_.Find(id);
  if (existing != nullptr && !existing->record.credential_hash().empty()) {
    if (request.node_credential().empty()) {
      return PermissionDeniedError(fmt::format(
          "node '{}' is already registered and has its own node credential; this registration presented {}: "
          "refused (the node keeps its routing; a join token admits new nodes only)",
          id, request.join_token().empty() ? "none" : "a join token"));
    }
    auto secret = ParseNodeCredential(request.node_credential());
    if (!secret.ok() || !SecretEquals(existing->record.credential_hash(), SecretHash(*secret))) {
      return PermissionDeniedError(fmt::format(
          "node '{}': the node credential presented is not this node's: refused (the node keeps its routing)", id));
    }
    return std::optional<NodeIdentity>();
  }
  if (request.join_token().empty()) {
    if (!request.node_credential().empty()) {
      return UnauthenticatedError(fmt::format(
          "node '{}' is not known to this coordinator (removed, or its state was reset), so its node credential is "
          "void: join again with a join token (anneal-agent --join-token-file)",
          id));
    }
    return UnauthenticatedError(
        fmt::format("node '{}' presented neither a node credential nor a join token: create a token with `anneal node "
                    "join-token create` and start the agent with --join-token-file",
                    id));
  }
  auto token_id = join_tokens_.Verify(request.join_token());
  if (!token_id.ok()) return token_id.status().WithContext(fmt::format("node '{}'", id));
  // The agent may propose its credential (written to its disk before it first registers): a retried join whose
  // first reply was lost then still proves the node. Otherwise the coordinator makes one and shows it once.
  if (!request.node_credential().empty()) {
    auto proposed = ParseNodeCredential(request.node_credential());
    if (!proposed.ok()) return UnauthenticatedError(fmt::format("node '{}': {}", id, proposed.status().message()));
    return std::optional<NodeIdentity>(NodeIdentity{SecretHash(*proposed), *token_id, request.spool_acked_seq()});
  }
  const std::string secret = RandomHex(kSecretBytes);
  *credential = FormatNodeCredential(secret);
  return std::optional<NodeIdentity>(NodeIdentity{SecretHash(secret), *token_id, request.spool_acked_seq()});
}

void Coordinator::RefuseRegister(const std::string& peer, const pb::RegisterRequest& request, const Status& error) {
  spdlog::warn("refused the registration of node '{}': {}", Printable(request.node_id()), error.message());
  pb::CoordinatorToAgent reply;
  reply.mutable_register_reply()->set_accepted(false);
  reply.mutable_register_reply()->mutable_error()->set_code(static_cast<pb::ErrorCode>(error.code()));
  reply.mutable_register_reply()->mutable_error()->set_message(error.message());
  SendToPeer(peer, std::move(reply));
}

bool Coordinator::HasTaskInEpoch(const pb::JobRecord& job, const std::string& node_id, uint64_t epoch) const {
  return epoch == job.epoch() && job.task_states().count(node_id) > 0;
}

std::string Coordinator::ForeignReport(const Node& node, const pb::AgentToCoordinator& message) const {
  const std::string& id = node.record.node_id();
  switch (message.body_case()) {
    case pb::AgentToCoordinator::kMetricBatch: {
      const pb::MetricBatch& batch = message.metric_batch();
      const Job* job = jobs_.Find(batch.job_id());
      if (job != nullptr && HasTaskInEpoch(job->record, id, batch.epoch())) return "";
      return fmt::format("metrics for job {} epoch {}, which has no task on node {}", Printable(batch.job_id()),
                         batch.epoch(), id);
    }
    case pb::AgentToCoordinator::kCheckpointCommitted: {
      const pb::CheckpointRecord& c = message.checkpoint_committed().checkpoint();
      const Job* active = jobs_.Find(c.job_id());
      auto stored = active != nullptr ? StatusOr<pb::JobRecord>(active->record) : jobs_.GetRecord(c.job_id());
      if (!stored.ok() || !HasTaskInEpoch(*stored, id, c.epoch())) {
        return fmt::format("checkpoint of job {} epoch {}, which has no task on node {}", Printable(c.job_id()),
                           c.epoch(), id);
      }
      const std::string expected = NormalPath(stored->output_dir() + "/checkpoint-" + std::to_string(c.step()));
      if (stored->output_dir().empty() || NormalPath(c.path()) != expected) {
        return fmt::format("checkpoint of job {} at step {}: path '{}' is not the job's {}", c.job_id(), c.step(),
                           Printable(c.path()), expected);
      }
      return "";
    }
    case pb::AgentToCoordinator::kCheckpointDeleted: {
      const pb::CheckpointDeleted& deleted = message.checkpoint_deleted();
      for (const auto& c : checkpoints_.DeletingOn(id)) {
        if (c.job_id() == deleted.job_id() && c.step() == deleted.step()) return "";
      }
      return fmt::format("deletion of checkpoint {} step {}, which node {} was not asked to delete",
                         Printable(deleted.job_id()), deleted.step(), id);
    }
    default:
      return "";  // TaskUpdate: ApplyTaskStatus applies only the node's current task
  }
}

StatusOr<bool> Coordinator::BootstrapJoinToken(const std::string& token) {
  if (HasNodeIdentities()) return false;
  RETURN_IF_ERROR(join_tokens_.Import(token, options_.join_token_ttl_ms, "bootstrap").status());
  ASSIGN_OR_RETURN(auto out, Flush());
  (void)out;  // nothing to send before the loop starts
  return true;
}

void Coordinator::HandleNodeAdminRequest(const Principal& who, const std::string& peer,
                                         const pb::ClientRequest& request) {
  Status allowed = RequireClusterAdmin(who, request.has_remove_node() ? "remove nodes" : "manage join tokens");
  StatusOr<pb::ClientReply> reply = allowed;
  std::string target;
  if (request.has_create_join_token()) {
    if (allowed.ok()) reply = CreateJoinToken(request.create_join_token());
    target = reply.ok() ? reply->create_join_token().record().id() : "";
  } else if (request.has_list_join_tokens()) {
    if (!allowed.ok()) return ReplyError(peer, request.request_id(), allowed);
    pb::ClientReply list;
    list.set_request_id(request.request_id());
    list.mutable_list_join_tokens();  // an empty list is still a list reply
    for (auto& record : join_tokens_.List()) *list.mutable_list_join_tokens()->add_tokens() = std::move(record);
    return Reply(peer, std::move(list));
  } else if (request.has_revoke_join_token()) {
    target = request.revoke_join_token().id();
    if (allowed.ok()) {
      auto revoked = join_tokens_.Revoke(target);
      reply = revoked.status();
      if (revoked.ok()) {
        reply = pb::ClientReply();
        *reply->mutable_revoke_join_token()->mutable_record() = *revoked;
      }
    }
  } else {
    target = request.remove_node().node_id();
    if (allowed.ok()) reply = RemoveNode(request.remove_node());
  }
  AuditAndReply(who, peer, request, "", target, reply.status(), reply.ok() ? std::move(*reply) : pb::ClientReply());
}

StatusOr<pb::ClientReply> Coordinator::CreateJoinToken(const pb::CreateJoinTokenRequest& request) {
  if (request.ttl_ms() < 0 || request.description().size() > 1024) {
    return InvalidArgumentError(
        fmt::format("create join token: the TTL must be >= 0 ms (got {}) and the "
                    "description at most 1024 bytes (got {})",
                    request.ttl_ms(), request.description().size()));
  }
  CreatedJoinToken created =
      join_tokens_.Create(request.ttl_ms() > 0 ? request.ttl_ms() : options_.join_token_ttl_ms, request.description());
  pb::ClientReply reply;
  auto* out = reply.mutable_create_join_token();
  out->set_token(created.token);
  *out->mutable_record() = created.record;
  for (const auto& address : options_.coordinator_addresses) out->add_coordinator_addresses(address);
  out->set_server_public_key(options_.server_public_key);
  return reply;  // sent after the token is durable (Flush commits first)
}

StatusOr<pb::ClientReply> Coordinator::RemoveNode(const pb::RemoveNodeRequest& request) {
  Node* node = nodes_.Find(request.node_id());
  if (node == nullptr) return NotFoundError(fmt::format("no node '{}'", Printable(request.node_id())));
  std::vector<std::string> running;
  for (const auto& job_id : node->task_jobs) {
    const Job* job = jobs_.Find(job_id);
    if (job == nullptr) continue;
    auto task = job->record.task_states().find(request.node_id());
    if (task != job->record.task_states().end() && !protocol::TaskEnded(task->second)) running.push_back(job_id);
  }
  if (!running.empty() && !request.force()) {
    return FailedPreconditionError(fmt::format(
        "node {} runs {} task(s) (jobs {}): drain it and wait for them, or remove it with --force, which marks "
        "them lost",
        request.node_id(), running.size(), fmt::join(running, ", ")));
  }
  const std::string id = request.node_id();
  // Also for a DOWN node: the tasks its reconnect grace kept are lost now.
  MarkNodeDown(*node, fmt::format("node {} removed by an admin", id), /*may_reconnect=*/false);
  nodes_.Remove(id);
  spdlog::info("node {} removed ({} task(s) marked lost); it must join again with a join token", id, running.size());
  schedule_dirty_ = true;
  pb::ClientReply reply;
  reply.mutable_remove_node()->set_tasks_lost(static_cast<uint32_t>(running.size()));
  return reply;
}

}  // namespace anneal::coordinator
