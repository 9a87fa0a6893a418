// IdentityRegistry: the cluster's users, teams, roles and API tokens, in memory and in the state store.
//
// Model. A user is a name; a cluster admin may do everything; every other permission comes from a role per
// team (pb::Role: viewer < member < admin, each including the ones below). Who may do what is decided by
// coordinator/authz.h from the Principal that Authenticate returns. An API token "ant_<id>_<secret>" belongs to
// one user; only the BLAKE2b hash of its secret is stored (common/secret_token.h), so the state directory never
// holds a usable credential.
//
// Token lifecycle (each edge a method; nothing leaves REVOKED or EXPIRED):
//
//   CreateToken ──> ACTIVE ──RevokeToken / DeleteUser──> REVOKED
//                     └──────── now >= expires_at_ms ───> EXPIRED (kept for the listing)
//
// Contract per method (every change goes into the borrowed batch; the Coordinator commits it in Flush):
//   Recover        loads every user, team and token. Call once, before anything else.
//   Bootstrap      on a registry with no user: team "default", the cluster admin `admin_name` and one token for
//                  it; returns the token (shown once). FAILED_PRECONDITION when a user exists.
//   Authenticate   UNAUTHENTICATED (naming why: malformed, unknown, revoked, expired, user deleted) or the
//                  Principal. The secret is compared in constant time.
//   CreateUser / CreateTeam   INVALID_ARGUMENT for a bad name (1-63 of [a-z0-9._-], starting with a letter or
//                  digit), ALREADY_EXISTS when taken.
//   DeleteUser     NOT_FOUND; revokes all its tokens; refuses to delete the last cluster admin.
//   DeleteTeam     NOT_FOUND; removes the team from every user (the caller checks it has no active jobs).
//   SetRole        NOT_FOUND for an unknown user or team; ROLE_UNSPECIFIED removes the membership.
//   SetTeamQuota   the team's fair-share weight and quotas (docs/user-guide.md "Sharing the cluster"). NOT_FOUND
//                  for an unknown team; INVALID_ARGUMENT naming the value for a weight that is not in
//                  (0, kMaxTeamWeight] (0 leaves it unchanged), a label that is not "" or key=value
//                  (ValidatePoolLabel), the same label twice, max < guaranteed (max 0 means no limit), more than
//                  kMaxQuotasPerTeam entries; FAILED_PRECONDITION when a raised guarantee would make the sum of
//                  every team's guarantees on a pool exceed its slots (`pool_slots`: label -> slots; a label
//                  missing there has 0), naming the pool, the sum and the capacity. guaranteed = max = 0 removes
//                  the entry. Nothing changes on an error. Lowering a guarantee is always allowed.
//   CreateToken    NOT_FOUND for an unknown user; ttl_ms < 0 INVALID_ARGUMENT; 0 = never expires.
//   RevokeToken    NOT_FOUND; revoking twice is OK (idempotent).
//
// Thread-safety: none; the coordinator's loop owns it. (The HTTP thread authenticates with AuthenticateInStore.)
// Ownership: borrows the batch, the store and the clock; all must outlive it.
//
// Example:
//   IdentityRegistry identity(&batch, store, &clock);
//   RETURN_IF_ERROR(identity.Recover());
//   if (identity.empty()) ASSIGN_OR_RETURN(std::string admin_token, identity.Bootstrap("admin"));
//   ASSIGN_OR_RETURN(Principal who, identity.Authenticate(request.token()));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

inline constexpr std::string_view kTokenPrefix = "ant";
inline constexpr std::string_view kDefaultTeam = "default";
inline constexpr double kMaxTeamWeight = 1e6;    // a team's fair-share weight is in (0, kMaxTeamWeight]
inline constexpr size_t kMaxQuotasPerTeam = 16;  // quota entries (pools) per team

// Who a request comes from.
struct Principal {
  std::string user{};
  std::string token_id{};
  bool cluster_admin = false;
  std::map<std::string, pb::Role> teams{};  // team -> role
};

// INVALID_ARGUMENT naming `what` when `name` is not 1-63 of [a-z0-9._-] starting with [a-z0-9].
Status ValidateIdentityName(std::string_view what, std::string_view name);

// Authenticates `token` against the records in `store` (thread-safe: reads only). The HTTP endpoint uses it;
// the loop uses IdentityRegistry::Authenticate (same checks, in-memory records).
StatusOr<Principal> AuthenticateInStore(const storage::StateStore& store, std::string_view token, int64_t now_ms);

class IdentityRegistry {
 public:
  IdentityRegistry(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock);

  Status Recover();
  bool empty() const { return users_.empty(); }

  StatusOr<std::string> Bootstrap(const std::string& admin_name);
  StatusOr<Principal> Authenticate(std::string_view token) const;

  Status CreateUser(const std::string& name, bool cluster_admin, const std::string& by);
  Status DeleteUser(const std::string& name);
  const pb::UserRecord* FindUser(const std::string& name) const;
  std::vector<pb::UserRecord> Users() const;

  Status CreateTeam(const std::string& name, const std::string& description, const std::string& by);
  Status DeleteTeam(const std::string& name);
  const pb::TeamRecord* FindTeam(const std::string& name) const;
  std::vector<pb::TeamRecord> Teams() const;
  Status SetRole(const std::string& team, const std::string& user, pb::Role role);
  StatusOr<pb::TeamRecord> SetTeamQuota(const pb::SetTeamQuotaRequest& request,
                                        const std::map<std::string, uint64_t>& pool_slots);

  // Returns the token (shown once) and its record with the hash cleared.
  StatusOr<std::pair<std::string, pb::ApiTokenRecord>> CreateToken(const std::string& user, int64_t ttl_ms,
                                                                   const std::string& description);
  Status RevokeToken(const std::string& token_id);
  const pb::ApiTokenRecord* FindToken(const std::string& token_id) const;
  // The tokens of `user` (every user's when empty), hashes cleared, oldest first.
  std::vector<pb::ApiTokenRecord> Tokens(const std::string& user) const;

 private:
  void PutUser(const pb::UserRecord& user);
  void PutToken(const pb::ApiTokenRecord& token);

  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  const Clock* clock_;
  std::map<std::string, pb::UserRecord> users_;
  std::map<std::string, pb::TeamRecord> teams_;
  std::map<std::string, pb::ApiTokenRecord> tokens_;  // by token id
};

}  // namespace anneal::coordinator
