#include "common/secret.h"

#include <sodium.h>

#include <cstdlib>
#include <string>

namespace anneal {
namespace {

void InitSodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) std::abort();  // no entropy source: nothing secret can be made safely
    return true;
  }();
  (void)ready;
}

}  // namespace

bool IsHex(std::string_view text, size_t length) {
  if (text.size() != length) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string RandomHex(size_t bytes) {
  InitSodium();
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string hex(bytes * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  hex.pop_back();  // the terminating NUL
  sodium_memzero(raw.data(), raw.size());
  return hex;
}

std::string SecretHash(std::string_view secret) {
  InitSodium();
  std::string hash(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(hash.data()), hash.size(),
                     reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), nullptr, 0);
  return hash;
}

bool SecretEquals(std::string_view a, std::string_view b) {
  InitSodium();
  if (a.size() != b.size() || a.empty()) return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string FormatJoinToken(std::string_view id, std::string_view secret) {
  return std::string(kJoinTokenPrefix) + std::string(id) + "_" + std::string(secret);
}

StatusOr<JoinTokenParts> ParseJoinToken(std::string_view token) {
  const Status malformed = InvalidArgumentError(
      "join token is malformed (expected anj_<16 hex digits>_<64 hex digits>, as printed by `anneal node "
      "join-token create`)");
  if (token.substr(0, kJoinTokenPrefix.size()) != kJoinTokenPrefix) return malformed;
  token.remove_prefix(kJoinTokenPrefix.size());
  const size_t underscore = token.find('_');
  if (underscore == std::string_view::npos) return malformed;
  JoinTokenParts parts{std::string(token.substr(0, underscore)), std::string(token.substr(underscore + 1))};
  if (!IsHex(parts.id, kJoinTokenIdBytes * 2) || !IsHex(parts.secret, kSecretBytes * 2)) return malformed;
  return parts;
}

std::string FormatNodeCredential(std::string_view secret) {
  return std::string(kNodeCredentialPrefix) + std::string(secret);
}

StatusOr<std::string> ParseNodeCredential(std::string_view credential) {
  if (credential.substr(0, kNodeCredentialPrefix.size()) != kNodeCredentialPrefix ||
      !IsHex(credential.substr(kNodeCredentialPrefix.size()), kSecretBytes * 2)) {
    return InvalidArgumentError("node credential is malformed (expected anc_<64 hex digits>)");
  }
  return std::string(credential.substr(kNodeCredentialPrefix.size()));
}

std::string TrimSecret(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return "";
  const size_t end = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(begin, end - begin + 1));
}

}  // namespace anneal
