#include "coordinator/authz.h"

#include <fmt/format.h>

#include <vector>

namespace anneal::coordinator {

std::string_view RoleName(pb::Role role) {
  switch (role) {
    case pb::ROLE_VIEWER:
      return "viewer";
    case pb::ROLE_MEMBER:
      return "member";
    case pb::ROLE_ADMIN:
      return "admin";
    default:
      return "none";
  }
}

StatusOr<pb::Role> ParseRole(std::string_view name) {
  if (name == "viewer") return pb::ROLE_VIEWER;
  if (name == "member") return pb::ROLE_MEMBER;
  if (name == "admin") return pb::ROLE_ADMIN;
  return InvalidArgumentError(fmt::format("role '{}' is not one of viewer, member, admin", name));
}

pb::Role RoleIn(const Principal& who, std::string_view team) {
  auto it = who.teams.find(std::string(team));
  return it == who.teams.end() ? pb::ROLE_UNSPECIFIED : it->second;
}

Status RequireTeamRole(const Principal& who, pb::Role needed, std::string_view team, std::string_view what) {
  if (who.cluster_admin) return Status::Ok();
  const pb::Role has = RoleIn(who, team);
  if (has >= needed) return Status::Ok();
  const std::string held = has == pb::ROLE_UNSPECIFIED ? fmt::format("{} is not in team '{}'", who.user, team)
                                                       : fmt::format("{} is a {} there", who.user, RoleName(has));
  return PermissionDeniedError(fmt::format("user '{}' may not {} team '{}': that needs role {}{} in team '{}' ({})",
                                           who.user, what, team, RoleName(needed),
                                           needed == pb::ROLE_ADMIN ? "" : " or above", team, held));
}

Status RequireClusterAdmin(const Principal& who, std::string_view what) {
  if (who.cluster_admin) return Status::Ok();
  return PermissionDeniedError(fmt::format("user '{}' may not {}: that needs cluster admin", who.user, what));
}

std::string JobTeam(const pb::JobRecord& job) {
  return job.team().empty() ? std::string(kDefaultTeam) : job.team();
}

StatusOr<std::string> ResolveSubmitTeam(const Principal& who, std::string_view requested) {
  if (!requested.empty()) return std::string(requested);
  std::vector<std::string> candidates;
  for (const auto& [team, role] : who.teams) {
    if (role >= pb::ROLE_MEMBER) candidates.push_back(team);
  }
  if (candidates.size() == 1) return candidates.front();
  if (candidates.empty() && who.cluster_admin) return std::string(kDefaultTeam);
  if (candidates.empty()) {
    return PermissionDeniedError(
        fmt::format("user '{}' may not submit jobs: not a member of any team (ask a "
                    "team admin: anneal team add-member TEAM {} --role member)",
                    who.user, who.user));
  }
  return InvalidArgumentError(fmt::format("user '{}' is a member of several teams ({}): name one with --team", who.user,
                                          fmt::join(candidates, ", ")));
}

}  // namespace anneal::coordinator
