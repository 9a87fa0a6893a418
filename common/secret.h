// Secrets that prove who is talking: random generation, hashing for storage, constant-time comparison, and the
// two credential formats of agent identity (libsodium underneath).
//
//   join token       "anj_<id>_<secret>"   id: 16 hex digits (public, names the token), secret: 64 hex digits
//   node credential  "anc_<secret>"        secret: 64 hex digits, bound to one node id by the coordinator
//
// Only SecretHash(secret) (BLAKE2b-256, 32 raw bytes) is ever stored; SecretEquals compares two hashes in
// constant time (sodium_memcmp), so the time a check takes says nothing about how much of a guess was right.
//
// Thread-safety: every function is thread-safe (libsodium is initialised once, on first use).
//
// Example:
//   const std::string token = FormatJoinToken(RandomHex(8), RandomHex(32));
//   auto parts = ParseJoinToken(token);                       // {id, secret} or INVALID_ARGUMENT
//   bool ok = SecretEquals(stored_hash, SecretHash(parts->secret));
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace anneal {

inline constexpr std::string_view kJoinTokenPrefix = "anj_";
inline constexpr std::string_view kNodeCredentialPrefix = "anc_";
inline constexpr size_t kJoinTokenIdBytes = 8;
inline constexpr size_t kSecretBytes = 32;

// Exactly `length` lowercase hex digits.
bool IsHex(std::string_view text, size_t length);
// `bytes` random bytes from the OS CSPRNG, as 2*bytes lowercase hex digits.
std::string RandomHex(size_t bytes);
// BLAKE2b-256 of the secret: 32 raw bytes.
std::string SecretHash(std::string_view secret);
// Constant-time equality of two hashes (false when the lengths differ).
bool SecretEquals(std::string_view a, std::string_view b);

struct JoinTokenParts {
  std::string id;
  std::string secret;
};
std::string FormatJoinToken(std::string_view id, std::string_view secret);
// INVALID_ARGUMENT "join token is malformed (expected anj_<16 hex>_<64 hex>)" otherwise; the message never
// repeats the secret.
StatusOr<JoinTokenParts> ParseJoinToken(std::string_view token);

std::string FormatNodeCredential(std::string_view secret);
// The secret of "anc_<64 hex>", or INVALID_ARGUMENT.
StatusOr<std::string> ParseNodeCredential(std::string_view credential);

// Surrounding whitespace removed (a token read from a file ends with a newline).
std::string TrimSecret(std::string_view text);

}  // namespace anneal
