// JoinTokenRegistry: the join tokens an admin created (`anneal node join-token create`), which a new agent
// exchanges for a node credential at its first registration (docs/architecture.md "Node identity").
//
// A token is "anj_<id>_<secret>" (common/secret.h). Only the id and BLAKE2b(secret) are stored (meta table,
// "join_token/<id>"); the full token is returned once, by Create. A token is reusable (any number of nodes may
// join with it, like kubeadm tokens) until it expires or is revoked:
//
//   (new) ──Create──▶ VALID ──expires_at passes──▶ EXPIRED
//                       └──────Revoke────────────▶ REVOKED
//
// Contract (record changes go into the borrowed batch; the Coordinator commits it in Flush):
//   Recover   loads every token.
//   Create    a fresh random id and secret; ttl_ms > 0 (the caller applies its default).
//   List      every token, hashes cleared, oldest first.
//   Revoke    NOT_FOUND "no join token '<id>'"; revoking twice is OK (the first time is kept).
//   Verify    the token's id when it is well formed, known, its secret matches (constant time), not revoked and
//             not expired; else UNAUTHENTICATED naming the token id (never the secret) and why.
//   CountJoin one more node joined with the token (shown by List).
//
// Thread-safety: none; the coordinator's loop owns it. Ownership: borrows the batch, store and clock.
//
// Example:
//   JoinTokenRegistry tokens(&batch, store, &clock);
//   RETURN_IF_ERROR(tokens.Recover());
//   auto created = tokens.Create(24 * 3600 * 1000, "rack 3");   // created->token is shown once
//   ASSIGN_OR_RETURN(std::string id, tokens.Verify(request.join_token()));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

struct CreatedJoinToken {
  std::string token;  // the only copy of the secret
  pb::JoinTokenRecord record;
};

class JoinTokenRegistry {
 public:
  JoinTokenRegistry(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock);

  Status Recover();
  CreatedJoinToken Create(int64_t ttl_ms, const std::string& description);
  // Stores a token made elsewhere (the `--bootstrap-join-token-file` of a fresh coordinator). INVALID_ARGUMENT
  // when malformed, ALREADY_EXISTS when its id is taken.
  StatusOr<pb::JoinTokenRecord> Import(const std::string& token, int64_t ttl_ms, const std::string& description);
  std::vector<pb::JoinTokenRecord> List() const;
  StatusOr<pb::JoinTokenRecord> Revoke(const std::string& id);
  StatusOr<std::string> Verify(const std::string& token) const;
  void CountJoin(const std::string& id);
  bool empty() const { return tokens_.empty(); }

 private:
  pb::JoinTokenRecord& Store(const std::string& id, const std::string& secret, int64_t ttl_ms,
                             const std::string& description);

  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  const Clock* clock_;
  std::map<std::string, pb::JoinTokenRecord> tokens_;
};

}  // namespace anneal::coordinator
