// The model registry's client requests (anneal models ls|show|register|promote|archive; GET /api/models):
// authorization, the audit record of each change, the replies. The registry itself is coordinator/model_registry.h.
//
//   request            needs (coordinator/authz.h; a cluster admin passes every check)
//   list, show         viewer (or above) in the model's team; `ls` without a team lists the teams one may read
//   register, promote, member (or above) in the model's team: the people who submit and cancel the team's jobs
//   archive              (and whose pipelines promote automatically) decide what serves
#include <fmt/format.h>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"

namespace anneal::coordinator {

namespace {

bool MayRead(const Principal& who, const std::string& team) {
  return who.cluster_admin || RoleIn(who, team) >= pb::ROLE_VIEWER;
}

std::string ModelOperation(const pb::ClientRequest& request) {
  switch (request.body_case()) {
    case pb::ClientRequest::kRegisterModel:
      return "model.register";
    case pb::ClientRequest::kPromoteModel:
      return "model.promote";
    case pb::ClientRequest::kArchiveModel:
      return "model.archive";
    default:
      return "";
  }
}

}  // namespace

StatusOr<std::string> Coordinator::ResolveModelTeam(const Principal& who, const std::string& team,
                                                    const std::string& name) const {
  if (!team.empty()) {
    if (identity_.FindTeam(team) == nullptr) {
      return NotFoundError(fmt::format("no team '{}' (anneal team ls lists them)", team));
    }
    return team;
  }
  std::vector<std::string> found;
  for (const auto& m : models_.Models()) {
    if (m.name() == name && MayRead(who, m.team())) found.push_back(m.team());
  }
  if (found.size() == 1) return found.front();
  if (found.empty()) {
    return NotFoundError(fmt::format(
        "no model '{}' in the teams you may read (anneal models ls lists them; name one as TEAM/NAME)", name));
  }
  return InvalidArgumentError(
      fmt::format("model '{}' exists in teams {}: name one as TEAM/{}", name, fmt::join(found, ", "), name));
}

StatusOr<pb::ListModelsReply> Coordinator::ListModels(const Principal& who, const std::string& team) const {
  if (!team.empty()) RETURN_IF_ERROR(RequireTeamRole(who, pb::ROLE_VIEWER, team, "read the models of"));
  pb::ListModelsReply reply;
  for (auto& m : models_.Models(team)) {
    if (!MayRead(who, m.team())) continue;
    if (const pb::ModelVersionRecord* production = models_.Production(m.team(), m.name())) {
      pb::ModelVersionRecord* p = reply.add_production();
      *p = *production;
      p->clear_spec_yaml();  // a list stays small; `show` has the whole record
    }
    *reply.add_models() = std::move(m);
  }
  return reply;
}

StatusOr<pb::GetModelReply> Coordinator::GetModel(const Principal& who, const std::string& team,
                                                  const std::string& name) const {
  ASSIGN_OR_RETURN(std::string resolved, ResolveModelTeam(who, team, name));
  RETURN_IF_ERROR(RequireTeamRole(who, pb::ROLE_VIEWER, resolved, "read the models of"));
  const pb::ModelRecord* model = models_.FindModel(resolved, name);
  if (model == nullptr) {
    return NotFoundError(
        fmt::format("no model '{}' in team '{}' (anneal models ls --team {} lists them)", name, resolved, resolved));
  }
  pb::GetModelReply reply;
  *reply.mutable_model() = *model;
  for (auto& v : models_.Versions(resolved, name)) *reply.add_versions() = std::move(v);
  return reply;
}

void Coordinator::HandleModelRequest(const Principal& who, const std::string& peer, const pb::ClientRequest& request) {
  const uint64_t id = request.request_id();
  pb::ClientReply reply;
  reply.set_request_id(id);
  if (request.has_list_models() || request.has_get_model()) {
    Status status;
    if (request.has_list_models()) {
      auto list = ListModels(who, request.list_models().team());
      status = list.status();
      if (list.ok()) *reply.mutable_list_models() = std::move(*list);
    } else {
      auto got = GetModel(who, request.get_model().team(), request.get_model().name());
      status = got.status();
      if (got.ok()) *reply.mutable_get_model() = std::move(*got);
    }
    if (!status.ok()) return ReplyError(peer, id, status);
    return Reply(peer, std::move(reply));
  }
  // The changes: register, promote, archive (member of the model's team).
  std::string team, name;
  if (request.has_register_model()) {
    team = request.register_model().team(), name = request.register_model().name();
  } else if (request.has_promote_model()) {
    team = request.promote_model().team(), name = request.promote_model().name();
  } else {
    team = request.archive_model().team(), name = request.archive_model().name();
  }
  StatusOr<pb::ModelVersionRecord> changed = InternalError("no model request");
  auto resolved =
      team.empty() && request.has_register_model() ? ResolveSubmitTeam(who, "") : ResolveModelTeam(who, team, name);
  Status allowed = resolved.status();
  if (allowed.ok()) team = *resolved;
  if (allowed.ok()) allowed = RequireTeamRole(who, pb::ROLE_MEMBER, team, "change the models of");
  const int64_t now = clock_->NowMs();
  std::string done;
  if (allowed.ok() && request.has_register_model()) {
    auto job = jobs_.GetRecord(request.register_model().job_id());
    changed = job.ok() ? models_.Register(team, name, *job, who.user, now, batch_)
                       : StatusOr<pb::ModelVersionRecord>(job.status());
    if (changed.ok()) done = fmt::format("v{} from job {}", changed->version(), changed->source_job_id());
  } else if (allowed.ok() && request.has_promote_model()) {
    const auto& r = request.promote_model();
    changed = models_.Promote(team, name, r.version(), who.user, r.reason(), now, batch_);
    if (changed.ok())
      done = fmt::format("v{} to production{}", r.version(), r.reason().empty() ? "" : ": " + r.reason());
  } else if (allowed.ok()) {
    const auto& r = request.archive_model();
    changed = models_.Archive(team, name, r.version(), who.user, r.reason(), now, batch_);
    if (changed.ok()) done = fmt::format("v{} archived{}", r.version(), r.reason().empty() ? "" : ": " + r.reason());
  }
  if (allowed.ok()) allowed = changed.status();
  audit_.Append({.user = who.user,
                 .team = team,
                 .operation = ModelOperation(request),
                 .target = team + "/" + name,
                 .message = done},
                allowed);
  if (!allowed.ok()) return ReplyError(peer, id, allowed);
  pb::ModelVersionReply* out = request.has_register_model()  ? reply.mutable_register_model()
                               : request.has_promote_model() ? reply.mutable_promote_model()
                                                             : reply.mutable_archive_model();
  *out->mutable_version() = std::move(*changed);
  out->set_message(fmt::format("{}/{} {}", team, name, done));
  Reply(peer, std::move(reply));
}

}  // namespace anneal::coordinator
