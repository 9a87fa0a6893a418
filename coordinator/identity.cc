#include "coordinator/identity.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/secret_token.h"

namespace anneal::coordinator {

using storage::Table;

namespace {

// The checks shared by the loop (in-memory records) and the HTTP thread (records read from the store).
// `token` and `user` are null when not found.
StatusOr<Principal> CheckToken(const ParsedSecretToken& presented, const pb::ApiTokenRecord* token,
                               const pb::UserRecord* user, int64_t now_ms) {
  if (token == nullptr || !SecretMatches(presented.secret, token->secret_hash())) {
    // One message for "no such id" and "wrong secret": the reply does not help guess ids.
    return UnauthenticatedError(
        fmt::format("token {} is not valid for this cluster (unknown or wrong secret); "
                    "create one with `anneal token create`",
                    presented.id));
  }
  if (token->revoked()) return UnauthenticatedError(fmt::format("token {} was revoked", presented.id));
  if (token->expires_at_ms() != 0 && now_ms >= token->expires_at_ms()) {
    return UnauthenticatedError(fmt::format("token {} expired", presented.id));
  }
  if (user == nullptr) {
    return UnauthenticatedError(
        fmt::format("token {} belongs to user '{}', who no longer exists", presented.id, token->user()));
  }
  Principal who;
  who.user = user->name();
  who.token_id = token->token_id();
  who.cluster_admin = user->cluster_admin();
  for (const auto& [team, role] : user->teams()) who.teams[team] = static_cast<pb::Role>(role);
  return who;
}

StatusOr<ParsedSecretToken> ParsePresented(std::string_view token) {
  if (token.empty()) {
    return UnauthenticatedError(
        "no token: every request needs an API token (--token, ANNEAL_TOKEN or the "
        "client config written by `anneal up`)");
  }
  return ParseSecretToken(token, kTokenPrefix);
}

pb::ApiTokenRecord WithoutHash(pb::ApiTokenRecord record) {
  record.clear_secret_hash();
  return record;
}

}  // namespace

Status ValidateIdentityName(std::string_view what, std::string_view name) {
  auto ok_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  };
  const bool ok = !name.empty() && name.size() <= 63 && std::all_of(name.begin(), name.end(), ok_char) &&
                  name[0] != '.' && name[0] != '_' && name[0] != '-';
  if (ok) return Status::Ok();
  return InvalidArgumentError(
      fmt::format("{} name '{}' is not valid: 1-63 characters of a-z 0-9 . _ -, starting "
                  "with a letter or digit",
                  what, name.substr(0, 80)));
}

StatusOr<Principal> AuthenticateInStore(const storage::StateStore& store, std::string_view token, int64_t now_ms) {
  ASSIGN_OR_RETURN(ParsedSecretToken presented, ParsePresented(token));
  pb::ApiTokenRecord record;
  Status st = store.Get(Table::kTokens, presented.id, &record);
  if (!st.ok() && st.code() != StatusCode::kNotFound) return st;
  const bool found = st.ok();
  pb::UserRecord user;
  bool user_found = false;
  if (found) {
    Status us = store.Get(Table::kUsers, record.user(), &user);
    if (!us.ok() && us.code() != StatusCode::kNotFound) return us;
    user_found = us.ok();
  }
  return CheckToken(presented, found ? &record : nullptr, user_found ? &user : nullptr, now_ms);
}

IdentityRegistry::IdentityRegistry(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock)
    : batch_(batch), store_(store), clock_(clock) {}

Status IdentityRegistry::Recover() {
  RETURN_IF_ERROR(store_->ScanRecords<pb::UserRecord>(Table::kUsers, "", [&](const pb::UserRecord& u) {
    users_[u.name()] = u;
    return true;
  }));
  RETURN_IF_ERROR(store_->ScanRecords<pb::TeamRecord>(Table::kTeams, "", [&](const pb::TeamRecord& t) {
    teams_[t.name()] = t;
    return true;
  }));
  return store_->ScanRecords<pb::ApiTokenRecord>(Table::kTokens, "", [&](const pb::ApiTokenRecord& t) {
    tokens_[t.token_id()] = t;
    return true;
  });
}

StatusOr<std::string> IdentityRegistry::Bootstrap(const std::string& admin_name) {
  if (!users_.empty()) {
    return FailedPreconditionError(
        fmt::format("the cluster already has {} user(s): bootstrap happens once, on a "
                    "fresh state directory",
                    users_.size()));
  }
  if (!teams_.count(std::string(kDefaultTeam))) {
    RETURN_IF_ERROR(CreateTeam(std::string(kDefaultTeam), "created at bootstrap", "bootstrap"));
  }
  RETURN_IF_ERROR(CreateUser(admin_name, /*cluster_admin=*/true, "bootstrap"));
  RETURN_IF_ERROR(SetRole(std::string(kDefaultTeam), admin_name, pb::ROLE_ADMIN));
  ASSIGN_OR_RETURN(auto token, CreateToken(admin_name, 0, "bootstrap credential"));
  return token.first;
}

StatusOr<Principal> IdentityRegistry::Authenticate(std::string_view token) const {
  ASSIGN_OR_RETURN(ParsedSecretToken presented, ParsePresented(token));
  auto t = tokens_.find(presented.id);
  const pb::ApiTokenRecord* record = t == tokens_.end() ? nullptr : &t->second;
  const pb::UserRecord* user = record == nullptr ? nullptr : FindUser(record->user());
  return CheckToken(presented, record, user, clock_->NowMs());
}

void IdentityRegistry::PutUser(const pb::UserRecord& user) {
  users_[user.name()] = user;
  batch_->Put(Table::kUsers, user.name(), user);
}

void IdentityRegistry::PutToken(const pb::ApiTokenRecord& token) {
  tokens_[token.token_id()] = token;
  batch_->Put(Table::kTokens, token.token_id(), token);
}

Status IdentityRegistry::CreateUser(const std::string& name, bool cluster_admin, const std::string& by) {
  RETURN_IF_ERROR(ValidateIdentityName("user", name));
  if (users_.count(name)) return AlreadyExistsError(fmt::format("user '{}' already exists", name));
  pb::UserRecord user;
  user.set_name(name);
  user.set_cluster_admin(cluster_admin);
  user.set_created_at_ms(clock_->NowMs());
  user.set_created_by(by);
  PutUser(user);
  return Status::Ok();
}

Status IdentityRegistry::DeleteUser(const std::string& name) {
  auto it = users_.find(name);
  if (it == users_.end()) return NotFoundError(fmt::format("no user '{}'", name));
  if (it->second.cluster_admin()) {
    const auto admins =
        std::count_if(users_.begin(), users_.end(), [](const auto& entry) { return entry.second.cluster_admin(); });
    if (admins == 1) {
      return FailedPreconditionError(
          fmt::format("user '{}' is the last cluster admin: create another admin first", name));
    }
  }
  for (auto& [id, token] : tokens_) {
    if (token.user() == name && !token.revoked()) RETURN_IF_ERROR(RevokeToken(id));
  }
  users_.erase(it);
  batch_->Delete(Table::kUsers, name);
  return Status::Ok();
}

const pb::UserRecord* IdentityRegistry::FindUser(const std::string& name) const {
  auto it = users_.find(name);
  return it == users_.end() ? nullptr : &it->second;
}

std::vector<pb::UserRecord> IdentityRegistry::Users() const {
  std::vector<pb::UserRecord> out;
  for (const auto& [name, user] : users_) out.push_back(user);
  return out;
}

Status IdentityRegistry::CreateTeam(const std::string& name, const std::string& description, const std::string& by) {
  RETURN_IF_ERROR(ValidateIdentityName("team", name));
  if (description.size() > 1024) return InvalidArgumentError("a team description is at most 1024 bytes");
  if (teams_.count(name)) return AlreadyExistsError(fmt::format("team '{}' already exists", name));
  pb::TeamRecord team;
  team.set_name(name);
  team.set_description(description);
  team.set_created_at_ms(clock_->NowMs());
  team.set_created_by(by);
  teams_[name] = team;
  batch_->Put(Table::kTeams, name, team);
  return Status::Ok();
}

Status IdentityRegistry::DeleteTeam(const std::string& name) {
  if (!teams_.erase(name)) return NotFoundError(fmt::format("no team '{}'", name));
  batch_->Delete(Table::kTeams, name);
  for (auto& [user_name, user] : users_) {
    if (user.teams().count(name)) {
      pb::UserRecord changed = user;
      changed.mutable_teams()->erase(name);
      PutUser(changed);
    }
  }
  return Status::Ok();
}

const pb::TeamRecord* IdentityRegistry::FindTeam(const std::string& name) const {
  auto it = teams_.find(name);
  return it == teams_.end() ? nullptr : &it->second;
}

std::vector<pb::TeamRecord> IdentityRegistry::Teams() const {
  std::vector<pb::TeamRecord> out;
  for (const auto& [name, team] : teams_) out.push_back(team);
  return out;
}

Status IdentityRegistry::SetRole(const std::string& team, const std::string& user, pb::Role role) {
  if (!teams_.count(team)) return NotFoundError(fmt::format("no team '{}'", team));
  const pb::UserRecord* found = FindUser(user);
  if (found == nullptr) return NotFoundError(fmt::format("no user '{}'", user));
  if (!pb::Role_IsValid(role))
    return InvalidArgumentError(fmt::format("role {} is not a role", static_cast<int>(role)));
  pb::UserRecord changed = *found;
  if (role == pb::ROLE_UNSPECIFIED) {
    changed.mutable_teams()->erase(team);
  } else {
    (*changed.mutable_teams())[team] = role;
  }
  PutUser(changed);
  return Status::Ok();
}

StatusOr<std::pair<std::string, pb::ApiTokenRecord>> IdentityRegistry::CreateToken(const std::string& user,
                                                                                   int64_t ttl_ms,
                                                                                   const std::string& description) {
  if (FindUser(user) == nullptr) return NotFoundError(fmt::format("no user '{}'", user));
  if (ttl_ms < 0) return InvalidArgumentError(fmt::format("token ttl {} ms is negative", ttl_ms));
  if (description.size() > 1024) return InvalidArgumentError("a token description is at most 1024 bytes");
  SecretToken secret = GenerateSecretToken(kTokenPrefix);
  while (tokens_.count(secret.id)) secret = GenerateSecretToken(kTokenPrefix);  // 48 random bits: rare
  pb::ApiTokenRecord record;
  record.set_token_id(secret.id);
  record.set_user(user);
  record.set_secret_hash(secret.secret_hash);
  record.set_created_at_ms(clock_->NowMs());
  record.set_expires_at_ms(ttl_ms == 0 ? 0 : clock_->NowMs() + ttl_ms);
  record.set_description(description);
  PutToken(record);
  return std::make_pair(secret.token, WithoutHash(record));
}

Status IdentityRegistry::RevokeToken(const std::string& token_id) {
  auto it = tokens_.find(token_id);
  if (it == tokens_.end()) return NotFoundError(fmt::format("no token '{}'", token_id));
  if (it->second.revoked()) return Status::Ok();
  pb::ApiTokenRecord changed = it->second;
  changed.set_revoked(true);
  changed.set_revoked_at_ms(clock_->NowMs());
  PutToken(changed);
  return Status::Ok();
}

const pb::ApiTokenRecord* IdentityRegistry::FindToken(const std::string& token_id) const {
  auto it = tokens_.find(token_id);
  return it == tokens_.end() ? nullptr : &it->second;
}

std::vector<pb::ApiTokenRecord> IdentityRegistry::Tokens(const std::string& user) const {
  std::vector<pb::ApiTokenRecord> out;
  for (const auto& [id, token] : tokens_) {
    if (user.empty() || token.user() == user) out.push_back(WithoutHash(token));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.created_at_ms() < b.created_at_ms(); });
  return out;
}

}  // namespace anneal::coordinator
