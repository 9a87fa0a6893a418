// Bearer secrets: API tokens ("ant_..."), and any other credential that is shown once and stored as a hash.
//
// A token is "<prefix>_<id>_<secret>": the id (12 hex digits) names the stored record, so a lookup is one key
// read; the secret (32 random bytes, 64 hex digits) is checked against the record's BLAKE2b-256 hash in
// constant time (libsodium), so neither the stored hash nor the timing of a comparison reveals it.
//
// Built on common/secret.h (random hex, BLAKE2b hash, constant-time compare), which also has the agents' join
// token and node credential formats.
//
// Thread-safety: pure functions.
//
// Example:
//   SecretToken t = GenerateSecretToken("ant");     // t.token is shown once; store t.id and t.secret_hash
//   ASSIGN_OR_RETURN(ParsedSecretToken p, ParseSecretToken(presented, "ant"));
//   if (p.id == t.id && SecretMatches(p.secret, t.secret_hash)) ...
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace anneal {

struct SecretToken {
  std::string token;        // "<prefix>_<id>_<secret>": give it to its owner, never store it
  std::string id;           // 12 hex digits
  std::string secret_hash;  // 32 bytes (BLAKE2b-256 of the secret): what is stored
};

struct ParsedSecretToken {
  std::string id;
  std::string secret;
};

SecretToken GenerateSecretToken(std::string_view prefix);

// UNAUTHENTICATED naming the expected shape when `token` is not "<prefix>_<12 hex>_<64 hex>" (the token
// itself is never echoed: it may be a mistyped secret).
StatusOr<ParsedSecretToken> ParseSecretToken(std::string_view token, std::string_view prefix);

// Constant-time comparison of SecretHash(secret) (common/secret.h) with `stored_hash`.
bool SecretMatches(std::string_view secret, std::string_view stored_hash);

}  // namespace anneal
