// Authorization: who may do what, as pure functions of the Principal (coordinator/identity.h).
//
//   operation                                       needs
//   ─────────────────────────────────────────────   ──────────────────────────────────────────
//   read a team's jobs (get, list, watch, logs,     viewer (or above) in the job's team
//     checkpoints) and its queue (anneal queue)
//   submit to a team, cancel a team's job           member (or above) in that team
//   add, change or remove a team's members          admin in that team
//   list nodes, list teams, whoami, own tokens      any authenticated user
//   drain or remove nodes, join tokens, users,      cluster admin
//     create/delete teams, team weights and
//     quotas, others' tokens, audit
// A cluster admin passes every check. Refusals are PERMISSION_DENIED and name the user, the operation, the
// role it needs, the team, and the role the user has there ("user 'bob' may not cancel jobs of team 'nlp':
// that needs role member or above in team 'nlp' (bob is a viewer there)").
//
// Thread-safety: pure functions.
//
// Example:
//   RETURN_IF_ERROR(RequireTeamRole(who, pb::ROLE_MEMBER, job.team(), "cancel jobs of"));
//   RETURN_IF_ERROR(RequireClusterAdmin(who, "drain nodes"));
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "coordinator/identity.h"

namespace anneal::coordinator {

// "viewer", "member", "admin" ("none" for ROLE_UNSPECIFIED).
std::string_view RoleName(pb::Role role);
// Parses a role name (INVALID_ARGUMENT listing the names otherwise).
StatusOr<pb::Role> ParseRole(std::string_view name);

// The user's role in `team` (ROLE_UNSPECIFIED when not a member).
pb::Role RoleIn(const Principal& who, std::string_view team);

// `what` reads as "<what> team 'x'", e.g. "submit jobs to", "read jobs of", "manage the members of".
Status RequireTeamRole(const Principal& who, pb::Role needed, std::string_view team, std::string_view what);
// `what` reads as "may not <what>", e.g. "drain nodes".
Status RequireClusterAdmin(const Principal& who, std::string_view what);

// The team a job is in: its record's team, or "default" for jobs submitted before teams existed.
std::string JobTeam(const pb::JobRecord& job);

// The team a submission goes to: `requested` when given; else the submitter's only team where it is a member
// or above; else "default" for a cluster admin. INVALID_ARGUMENT naming the candidates when it is ambiguous.
StatusOr<std::string> ResolveSubmitTeam(const Principal& who, std::string_view requested);

}  // namespace anneal::coordinator
