#include "common/secret_token.h"

#include "common/secret.h"

namespace anneal {
namespace {

constexpr size_t kTokenIdBytes = 6;

}  // namespace

bool SecretMatches(std::string_view secret, std::string_view stored_hash) {
  return SecretEquals(SecretHash(secret), stored_hash);
}

SecretToken GenerateSecretToken(std::string_view prefix) {
  SecretToken t;
  t.id = RandomHex(kTokenIdBytes);
  const std::string secret = RandomHex(kSecretBytes);
  t.secret_hash = SecretHash(secret);
  t.token = std::string(prefix) + "_" + t.id + "_" + secret;
  return t;
}

StatusOr<ParsedSecretToken> ParseSecretToken(std::string_view token, std::string_view prefix) {
  const std::string shape = std::string(prefix) + "_<12 hex digits>_<64 hex digits>";
  const size_t id_start = prefix.size() + 1;
  const size_t secret_start = id_start + 2 * kTokenIdBytes + 1;
  if (token.size() != secret_start + 2 * kSecretBytes || token.substr(0, prefix.size()) != prefix ||
      token[prefix.size()] != '_' || token[secret_start - 1] != '_') {
    return UnauthenticatedError("the token is not an Anneal token of the form " + shape);
  }
  ParsedSecretToken parsed{std::string(token.substr(id_start, 2 * kTokenIdBytes)),
                           std::string(token.substr(secret_start))};
  if (!IsHex(parsed.id, 2 * kTokenIdBytes) || !IsHex(parsed.secret, 2 * kSecretBytes)) {
    return UnauthenticatedError("the token is not an Anneal token of the form " + shape);
  }
  return parsed;
}

}  // namespace anneal
