// JoinTokenRegistry (coordinator/join_tokens.h): join tokens, stored as hashes, verified in constant time.
#include "coordinator/join_tokens.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/secret.h"
#include "coordinator/store_keys.h"

namespace anneal::coordinator {

using storage::Table;

JoinTokenRegistry::JoinTokenRegistry(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock)
    : batch_(batch), store_(store), clock_(clock) {}

Status JoinTokenRegistry::Recover() {
  return store_->ScanRecords<pb::JoinTokenRecord>(Table::kMeta, kJoinTokenPrefix, [&](const pb::JoinTokenRecord& r) {
    tokens_[r.id()] = r;
    return true;
  });
}

pb::JoinTokenRecord& JoinTokenRegistry::Store(const std::string& id, const std::string& secret, int64_t ttl_ms,
                                              const std::string& description) {
  pb::JoinTokenRecord& record = tokens_[id];
  const int64_t now = clock_->NowMs();
  record.set_id(id);
  record.set_secret_hash(SecretHash(secret));
  record.set_created_at_ms(now);
  record.set_expires_at_ms(ttl_ms > 0 ? now + ttl_ms : 0);
  record.set_description(description);
  batch_->Put(Table::kMeta, JoinTokenKey(id), record);
  return record;
}

CreatedJoinToken JoinTokenRegistry::Create(int64_t ttl_ms, const std::string& description) {
  std::string id = RandomHex(kJoinTokenIdBytes);
  while (tokens_.count(id)) id = RandomHex(kJoinTokenIdBytes);
  const std::string secret = RandomHex(kSecretBytes);
  CreatedJoinToken created{FormatJoinToken(id, secret), Store(id, secret, ttl_ms, description)};
  created.record.clear_secret_hash();
  spdlog::info("join token {} created (expires {})", id,
               ttl_ms > 0 ? fmt::format("in {} s", ttl_ms / 1000) : std::string("never"));
  return created;
}

StatusOr<pb::JoinTokenRecord> JoinTokenRegistry::Import(const std::string& token, int64_t ttl_ms,
                                                        const std::string& description) {
  ASSIGN_OR_RETURN(JoinTokenParts parts, ParseJoinToken(token));
  if (tokens_.count(parts.id)) return AlreadyExistsError(fmt::format("join token {} already exists", parts.id));
  pb::JoinTokenRecord record = Store(parts.id, parts.secret, ttl_ms, description);
  record.clear_secret_hash();
  return record;
}

std::vector<pb::JoinTokenRecord> JoinTokenRegistry::List() const {
  std::vector<pb::JoinTokenRecord> out;
  for (const auto& [id, record] : tokens_) {
    out.push_back(record);
    out.back().clear_secret_hash();
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.created_at_ms() < b.created_at_ms(); });
  return out;
}

StatusOr<pb::JoinTokenRecord> JoinTokenRegistry::Revoke(const std::string& id) {
  auto it = tokens_.find(id);
  if (it == tokens_.end())
    return NotFoundError(fmt::format("no join token '{}' (see anneal node join-token list)", id));
  if (!it->second.revoked()) {
    it->second.set_revoked(true);
    it->second.set_revoked_at_ms(clock_->NowMs());
    batch_->Put(Table::kMeta, JoinTokenKey(id), it->second);
    spdlog::info("join token {} revoked", id);
  }
  pb::JoinTokenRecord record = it->second;
  record.clear_secret_hash();
  return record;
}

StatusOr<std::string> JoinTokenRegistry::Verify(const std::string& token) const {
  auto parts = ParseJoinToken(token);
  if (!parts.ok()) return UnauthenticatedError(parts.status().message());
  auto it = tokens_.find(parts->id);
  // An unknown id and a wrong secret read the same: the answer tells nothing about which ids exist.
  if (it == tokens_.end() || !SecretEquals(it->second.secret_hash(), SecretHash(parts->secret))) {
    return UnauthenticatedError(fmt::format("join token {} is not valid for this coordinator", parts->id));
  }
  if (it->second.revoked()) return UnauthenticatedError(fmt::format("join token {} was revoked", parts->id));
  if (it->second.expires_at_ms() != 0 && clock_->NowMs() >= it->second.expires_at_ms()) {
    return UnauthenticatedError(
        fmt::format("join token {} expired {} s ago; create a new one with `anneal node "
                    "join-token create`",
                    parts->id, (clock_->NowMs() - it->second.expires_at_ms()) / 1000));
  }
  return parts->id;
}

void JoinTokenRegistry::CountJoin(const std::string& id) {
  auto it = tokens_.find(id);
  if (it == tokens_.end()) return;
  it->second.set_nodes_joined(it->second.nodes_joined() + 1);
  batch_->Put(Table::kMeta, JoinTokenKey(id), it->second);
}

}  // namespace anneal::coordinator
