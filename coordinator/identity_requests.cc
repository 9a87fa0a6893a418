// The client channel's identity side: authentication of every request, the audit of every mutation, and the
// requests that manage users, teams, roles and API tokens or read the audit log (who may: coordinator/authz.h).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/sharing.h"
#include "protocol/states.h"

namespace anneal::coordinator {

namespace {

// The audit name of a mutating request; empty for a read.
std::string OperationOf(const pb::ClientRequest& request) {
  switch (request.body_case()) {
    case pb::ClientRequest::kSubmit:
      return "submit";
    case pb::ClientRequest::kCancel:
      return "cancel";
    case pb::ClientRequest::kDrain:
      return request.drain().undrain() ? "undrain" : "drain";
    case pb::ClientRequest::kCreateToken:
      return "token.create";
    case pb::ClientRequest::kRevokeToken:
      return "token.revoke";
    case pb::ClientRequest::kCreateUser:
      return "user.create";
    case pb::ClientRequest::kDeleteUser:
      return "user.delete";
    case pb::ClientRequest::kCreateTeam:
      return "team.create";
    case pb::ClientRequest::kDeleteTeam:
      return "team.delete";
    case pb::ClientRequest::kSetRole:
      return "team.set_role";
    case pb::ClientRequest::kSetTeamQuota:
      return "team.quota";
    default:
      return "";
  }
}

// "weight 2; gpu=h100 guaranteed 8 max 16; whole cluster guaranteed 4 max unlimited" (the audit's message).
std::string DescribeSharing(const pb::TeamRecord& team) {
  std::string out = fmt::format("weight {}", team.weight() == 0 ? 1.0 : team.weight());
  for (const auto& q : team.quotas()) {
    out += fmt::format("; {} guaranteed {} max {}", q.label().empty() ? "whole cluster" : q.label(), q.guaranteed(),
                       q.max() == 0 ? std::string("unlimited") : std::to_string(q.max()));
  }
  return out;
}

pb::ClientReply Done(uint64_t request_id, std::string message) {
  pb::ClientReply reply;
  reply.set_request_id(request_id);
  reply.mutable_identity_done()->set_message(std::move(message));
  return reply;
}

}  // namespace

std::optional<Principal> Coordinator::AuthenticateClient(const std::string& peer, const pb::ClientRequest& request) {
  auto who = identity_.Authenticate(request.token());
  if (who.ok()) return std::move(*who);
  if (const std::string op = OperationOf(request); !op.empty()) {
    audit_.Append({.operation = op, .target = "(unauthenticated)"}, who.status());
  }
  ReplyError(peer, request.request_id(), who.status());
  return std::nullopt;
}

void Coordinator::AuditAndReply(const Principal& who, const std::string& peer, const pb::ClientRequest& request,
                                const std::string& team, const std::string& target, const Status& result,
                                pb::ClientReply reply, const std::string& done) {
  audit_.Append({.user = who.user, .team = team, .operation = OperationOf(request), .target = target, .message = done},
                result);
  if (!result.ok()) {
    if (result.code() == StatusCode::kPermissionDenied) spdlog::info("refused: {}", result.message());
    ReplyError(peer, request.request_id(), result);
    return;
  }
  reply.set_request_id(request.request_id());
  Reply(peer, std::move(reply));
}

bool Coordinator::HandleIdentityRequest(const Principal& who, const std::string& peer,
                                        const pb::ClientRequest& request) {
  const uint64_t id = request.request_id();
  switch (request.body_case()) {
    case pb::ClientRequest::kWhoami: {
      pb::ClientReply reply;
      reply.set_request_id(id);
      if (const pb::UserRecord* user = identity_.FindUser(who.user)) *reply.mutable_whoami()->mutable_user() = *user;
      reply.mutable_whoami()->set_token_id(who.token_id);
      Reply(peer, std::move(reply));
      return true;
    }
    case pb::ClientRequest::kCreateToken: {
      const auto& r = request.create_token();
      const std::string user = r.user().empty() ? who.user : r.user();
      Status allowed = user == who.user ? Status::Ok() : RequireClusterAdmin(who, "create tokens for other users");
      pb::ClientReply reply;
      if (allowed.ok()) {
        auto created = identity_.CreateToken(user, r.ttl_ms(), r.description());
        allowed = created.status();
        if (created.ok()) {
          reply.mutable_create_token()->set_token(created->first);
          *reply.mutable_create_token()->mutable_record() = created->second;
        }
      }
      const std::string target = allowed.ok() ? reply.create_token().record().token_id() : user;
      AuditAndReply(who, peer, request, "", target, allowed, std::move(reply),
                    fmt::format("token for user '{}'", user));
      return true;
    }
    case pb::ClientRequest::kListTokens: {
      const auto& r = request.list_tokens();
      const std::string user = r.all_users() ? "" : (r.user().empty() ? who.user : r.user());
      if (user != who.user) {
        if (Status st = RequireClusterAdmin(who, "list other users' tokens"); !st.ok()) {
          ReplyError(peer, id, st);
          return true;
        }
      }
      pb::ClientReply reply;
      reply.set_request_id(id);
      reply.mutable_list_tokens();
      for (auto& t : identity_.Tokens(user)) *reply.mutable_list_tokens()->add_tokens() = std::move(t);
      Reply(peer, std::move(reply));
      return true;
    }
    case pb::ClientRequest::kRevokeToken: {
      const std::string& token_id = request.revoke_token().token_id();
      const pb::ApiTokenRecord* token = identity_.FindToken(token_id);
      Status allowed = token == nullptr ? NotFoundError(fmt::format("no token '{}'", token_id)) : Status::Ok();
      if (allowed.ok() && token->user() != who.user) allowed = RequireClusterAdmin(who, "revoke other users' tokens");
      if (allowed.ok()) allowed = identity_.RevokeToken(token_id);
      AuditAndReply(who, peer, request, "", token_id, allowed, Done(id, fmt::format("token {} revoked", token_id)),
                    "revoked");
      return true;
    }
    case pb::ClientRequest::kCreateUser: {
      const auto& r = request.create_user();
      Status allowed = RequireClusterAdmin(who, "create users");
      if (allowed.ok()) allowed = identity_.CreateUser(r.name(), r.cluster_admin(), who.user);
      AuditAndReply(who, peer, request, "", r.name(), allowed,
                    Done(id, fmt::format("user '{}' created{}", r.name(), r.cluster_admin() ? " (cluster admin)" : "")),
                    r.cluster_admin() ? "cluster admin" : "");
      return true;
    }
    case pb::ClientRequest::kDeleteUser: {
      const std::string& name = request.delete_user().name();
      Status allowed = RequireClusterAdmin(who, "delete users");
      if (allowed.ok()) allowed = identity_.DeleteUser(name);
      AuditAndReply(who, peer, request, "", name, allowed,
                    Done(id, fmt::format("user '{}' deleted; its tokens are revoked", name)));
      return true;
    }
    case pb::ClientRequest::kListUsers: {
      if (Status st = RequireClusterAdmin(who, "list users"); !st.ok()) {
        ReplyError(peer, id, st);
        return true;
      }
      pb::ClientReply reply;
      reply.set_request_id(id);
      reply.mutable_list_users();
      for (auto& u : identity_.Users()) *reply.mutable_list_users()->add_users() = std::move(u);
      Reply(peer, std::move(reply));
      return true;
    }
    case pb::ClientRequest::kCreateTeam: {
      const auto& r = request.create_team();
      Status allowed = RequireClusterAdmin(who, "create teams");
      if (allowed.ok()) allowed = identity_.CreateTeam(r.name(), r.description(), who.user);
      AuditAndReply(who, peer, request, r.name(), r.name(), allowed,
                    Done(id, fmt::format("team '{}' created", r.name())));
      return true;
    }
    case pb::ClientRequest::kDeleteTeam: {
      const std::string& name = request.delete_team().name();
      Status allowed = RequireClusterAdmin(who, "delete teams");
      for (const auto& [job_id, job] : jobs_.all()) {
        if (allowed.ok() && JobTeam(job.record) == name && !protocol::IsTerminal(job.record.state())) {
          allowed = FailedPreconditionError(
              fmt::format("team '{}' still has active jobs (first: {}): cancel them first", name, job_id));
        }
      }
      if (allowed.ok()) allowed = identity_.DeleteTeam(name);
      if (allowed.ok()) usage_.Forget(name);  // a team created again later starts with no usage
      AuditAndReply(who, peer, request, name, name, allowed, Done(id, fmt::format("team '{}' deleted", name)));
      return true;
    }
    case pb::ClientRequest::kListTeams: {
      pb::ClientReply reply;
      reply.set_request_id(id);
      auto* out = reply.mutable_list_teams();
      for (auto& t : identity_.Teams()) *out->add_teams() = std::move(t);
      // Members: every user for a cluster admin; otherwise the members of the caller's own teams.
      for (const auto& user : identity_.Users()) {
        pb::UserRecord visible = user;
        if (!who.cluster_admin) {
          visible.mutable_teams()->clear();
          for (const auto& [team, role] : user.teams()) {
            if (RoleIn(who, team) != pb::ROLE_UNSPECIFIED) (*visible.mutable_teams())[team] = role;
          }
          if (visible.teams().empty()) continue;
          visible.set_cluster_admin(false);
        }
        *out->add_members() = std::move(visible);
      }
      Reply(peer, std::move(reply));
      return true;
    }
    case pb::ClientRequest::kSetRole: {
      const auto& r = request.set_role();
      Status allowed = RequireTeamRole(who, pb::ROLE_ADMIN, r.team(), "manage the members of");
      if (allowed.ok()) allowed = identity_.SetRole(r.team(), r.user(), r.role());
      const std::string what =
          r.role() == pb::ROLE_UNSPECIFIED
              ? fmt::format("user '{}' removed from team '{}'", r.user(), r.team())
              : fmt::format("user '{}' is now {} in team '{}'", r.user(), RoleName(r.role()), r.team());
      AuditAndReply(who, peer, request, r.team(), r.user(), allowed, Done(id, what), what);
      return true;
    }
    case pb::ClientRequest::kSetTeamQuota: {
      const auto& r = request.set_team_quota();
      Status allowed = RequireClusterAdmin(who, "set team weights and quotas");
      pb::ClientReply reply;
      if (allowed.ok()) {
        const std::vector<pb::NodeRecord> nodes = Nodes();
        std::map<std::string, uint64_t> pool_slots;
        for (const auto& q : r.quotas()) pool_slots[q.label()] = PoolSlots(nodes, q.label());
        auto changed = identity_.SetTeamQuota(r, pool_slots);
        allowed = changed.status();
        if (changed.ok()) *reply.mutable_set_team_quota()->add_teams() = std::move(*changed);
      }
      const std::string what = allowed.ok() ? DescribeSharing(reply.set_team_quota().teams(0)) : "";
      AuditAndReply(who, peer, request, r.team(), r.team(), allowed, std::move(reply), what);
      return true;
    }
    case pb::ClientRequest::kQueue: {
      auto queue = Queue(who, request.queue().team());
      if (!queue.ok()) {
        ReplyError(peer, id, queue.status());
        return true;
      }
      pb::ClientReply reply;
      reply.set_request_id(id);
      *reply.mutable_queue() = std::move(*queue);
      Reply(peer, std::move(reply));
      return true;
    }
    case pb::ClientRequest::kListAudit: {
      const auto& r = request.list_audit();
      Status allowed = r.team().empty() ? RequireClusterAdmin(who,
                                                              "read the whole audit log (a team admin may read "
                                                              "their team's: --team)")
                                        : RequireTeamRole(who, pb::ROLE_ADMIN, r.team(), "read the audit log of");
      if (!allowed.ok()) {
        ReplyError(peer, id, allowed);
        return true;
      }
      auto records = audit_.Read(r.before_seq(), std::min<uint32_t>(r.limit(), 10000), r.user(), r.team());
      if (!records.ok()) {
        ReplyError(peer, id, records.status());
        return true;
      }
      pb::ClientReply reply;
      reply.set_request_id(id);
      reply.mutable_list_audit();
      for (auto& rec : *records) *reply.mutable_list_audit()->add_records() = std::move(rec);
      Reply(peer, std::move(reply));
      return true;
    }
    default:
      return false;
  }
}

}  // namespace anneal::coordinator
