#include "common/secret_token.h"

#include <sodium.h>

#include <vector>

namespace anneal {
namespace {

constexpr size_t kIdBytes = 6;
constexpr size_t kSecretBytes = 32;

void EnsureSodium() {
  // sodium_init is idempotent and thread-safe; it fails only when no random source exists.
  static const int ready = sodium_init();
  ANNEAL_CHECK(ready >= 0);
}

bool IsLowerHex(std::string_view s, size_t digits) {
  if (s.size() != digits) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string RandomHex(size_t n) {
  EnsureSodium();
  std::vector<unsigned char> bytes(n);
  randombytes_buf(bytes.data(), n);
  std::string hex(2 * n + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes.data(), n);
  hex.pop_back();
  return hex;
}

std::string HashSecret(std::string_view secret) {
  EnsureSodium();
  std::string hash(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(hash.data()), hash.size(),
                     reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), nullptr, 0);
  return hash;
}

bool SecretMatches(std::string_view secret, std::string_view stored_hash) {
  const std::string hash = HashSecret(secret);
  if (stored_hash.size() != hash.size()) return false;
  return sodium_memcmp(hash.data(), stored_hash.data(), hash.size()) == 0;
}

SecretToken GenerateSecretToken(std::string_view prefix) {
  SecretToken t;
  t.id = RandomHex(kIdBytes);
  const std::string secret = RandomHex(kSecretBytes);
  t.secret_hash = HashSecret(secret);
  t.token = std::string(prefix) + "_" + t.id + "_" + secret;
  return t;
}

StatusOr<ParsedSecretToken> ParseSecretToken(std::string_view token, std::string_view prefix) {
  const std::string shape = std::string(prefix) + "_<12 hex digits>_<64 hex digits>";
  const size_t id_start = prefix.size() + 1;
  const size_t secret_start = id_start + 2 * kIdBytes + 1;
  if (token.size() != secret_start + 2 * kSecretBytes || token.substr(0, prefix.size()) != prefix ||
      token[prefix.size()] != '_' || token[secret_start - 1] != '_') {
    return UnauthenticatedError("the token is not an Anneal token of the form " + shape);
  }
  ParsedSecretToken parsed{std::string(token.substr(id_start, 2 * kIdBytes)), std::string(token.substr(secret_start))};
  if (!IsLowerHex(parsed.id, 2 * kIdBytes) || !IsLowerHex(parsed.secret, 2 * kSecretBytes)) {
    return UnauthenticatedError("the token is not an Anneal token of the form " + shape);
  }
  return parsed;
}

}  // namespace anneal
