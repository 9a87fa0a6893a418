#include "transfer/ticket.h"

#include <fmt/format.h>
#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/fsutil.h"

namespace anneal::transfer {
namespace {

constexpr std::string_view kTokenPrefix = "ant1.";

void InitSodium() {
  static const int init = sodium_init();
  ANNEAL_CHECK(init >= 0);
}

std::string ToHex(std::string_view raw) {
  std::string out(raw.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  out.pop_back();
  return out;
}

// Exactly `bytes` bytes from `hex` (2*bytes hex digits), or nullopt.
std::optional<std::string> FromHex(std::string_view hex, size_t bytes) {
  if (hex.size() != bytes * 2) return std::nullopt;
  std::string out(bytes, '\0');
  size_t len = 0;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), bytes, hex.data(), hex.size(), nullptr, &len,
                     nullptr) != 0 ||
      len != bytes) {
    return std::nullopt;
  }
  return out;
}

std::string ToBase64Url(std::string_view raw) {
  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(raw.size(), kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size(), kVariant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::optional<std::string> FromBase64Url(std::string_view text) {
  std::string out(text.size(), '\0');  // decoded is never longer than the text
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(), text.size(), nullptr,
                        &len, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

StatusOr<std::string> ReadHexKeyFile(const std::string& path, size_t bytes) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  auto raw = FromHex(text, bytes);
  if (!raw) {
    return FailedPreconditionError(
        fmt::format("{}: not a transfer signing key ({} hex digits expected)", path, bytes * 2));
  }
  return *raw;
}

}  // namespace

TicketSigner TicketSigner::Generate() {
  InitSodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  unsigned char sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  TicketSigner signer;
  signer.secret_key_.assign(reinterpret_cast<const char*>(sk), sizeof sk);
  signer.public_key_hex_ = ToHex(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk));
  sodium_memzero(sk, sizeof sk);
  return signer;
}

StatusOr<TicketSigner> TicketSigner::LoadOrCreate(const std::string& dir) {
  InitSodium();
  const std::string secret_path = dir + "/" + kTicketSecretKeyFile;
  const std::string public_path = dir + "/" + kTicketPublicKeyFile;
  std::error_code ec;
  const bool has_secret = std::filesystem::exists(secret_path, ec);
  const bool has_public = std::filesystem::exists(public_path, ec);
  if (!has_secret && !has_public) {
    RETURN_IF_ERROR(MakeDirs(dir));
    TicketSigner signer = Generate();
    RETURN_IF_ERROR(WriteNewFile(secret_path, ToHex(signer.secret_key_) + "\n", 0600));
    RETURN_IF_ERROR(WriteFileAtomic(public_path, signer.public_key_hex_ + "\n", 0644));
    return signer;
  }
  if (!has_secret) {
    return FailedPreconditionError(fmt::format(
        "{} exists but the secret key {} is missing: restore it, or remove both files to make a new key (every "
        "agent then learns the new public key at its next registration)",
        public_path, secret_path));
  }
  struct stat st {};
  if (::stat(secret_path.c_str(), &st) == 0 && (st.st_mode & 0077) != 0) {
    return FailedPreconditionError(
        fmt::format("{} is readable by other users (mode {:o}): chmod 600 it", secret_path, st.st_mode & 0777));
  }
  TicketSigner signer;
  ASSIGN_OR_RETURN(signer.secret_key_, ReadHexKeyFile(secret_path, crypto_sign_SECRETKEYBYTES));
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(pk, reinterpret_cast<const unsigned char*>(signer.secret_key_.data()));
  signer.public_key_hex_ = ToHex(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk));
  if (!has_public) {
    RETURN_IF_ERROR(WriteFileAtomic(public_path, signer.public_key_hex_ + "\n", 0644));
    return signer;
  }
  ASSIGN_OR_RETURN(std::string recorded, ReadHexKeyFile(public_path, crypto_sign_PUBLICKEYBYTES));
  if (ToHex(recorded) != signer.public_key_hex_) {
    return FailedPreconditionError(fmt::format(
        "{} does not hold the public key of the secret key in {}: one of them was replaced", public_path, secret_path));
  }
  return signer;
}

std::string TicketSigner::Sign(const Ticket& ticket) const {
  const std::string payload = nlohmann::json{{"n", ticket.node_id}, {"r", ticket.root},   {"e", ticket.expires_at_ms},
                                             {"p", ticket.purpose}, {"j", ticket.job_id}, {"t", ticket.team}}
                                  .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
                       reinterpret_cast<const unsigned char*>(secret_key_.data()));
  return std::string(kTokenPrefix) + ToBase64Url(payload) + "." +
         ToBase64Url(std::string_view(reinterpret_cast<const char*>(sig), sizeof sig));
}

StatusOr<Ticket> VerifyTicket(std::string_view token, std::string_view signer_public_key,
                              std::string_view serving_node_id, int64_t now_ms) {
  InitSodium();
  const auto public_key = FromHex(signer_public_key, crypto_sign_PUBLICKEYBYTES);
  if (!public_key) {
    return InvalidArgumentError("the pinned transfer signer key is not 64 hex digits: cannot check tickets");
  }
  if (token.size() > kMaxTicketBytes) {
    return UnauthenticatedError(
        fmt::format("ticket refused: {} bytes, more than the {} allowed", token.size(), kMaxTicketBytes));
  }
  if (token.substr(0, kTokenPrefix.size()) != kTokenPrefix) {
    return UnauthenticatedError("ticket refused: malformed (no \"ant1.\" prefix)");
  }
  token.remove_prefix(kTokenPrefix.size());
  const size_t dot = token.find('.');
  if (dot == std::string_view::npos) return UnauthenticatedError("ticket refused: malformed (no signature part)");
  const auto payload = FromBase64Url(token.substr(0, dot));
  const auto signature = FromBase64Url(token.substr(dot + 1));
  if (!payload || !signature) return UnauthenticatedError("ticket refused: malformed (bad base64)");
  if (signature->size() != crypto_sign_BYTES) {
    return UnauthenticatedError(
        fmt::format("ticket refused: truncated signature ({} of {} bytes)", signature->size(), crypto_sign_BYTES));
  }
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature->data()),
                                  reinterpret_cast<const unsigned char*>(payload->data()), payload->size(),
                                  reinterpret_cast<const unsigned char*>(public_key->data())) != 0) {
    return UnauthenticatedError(
        "ticket refused: bad signature (not signed by this cluster's coordinator key, or altered)");
  }
  const nlohmann::json doc = nlohmann::json::parse(*payload, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("n") || !doc["n"].is_string() || !doc.contains("r") ||
      !doc["r"].is_string() || !doc.contains("e") || !doc["e"].is_number_integer() || !doc.contains("p") ||
      !doc["p"].is_string() || !doc.contains("j") || !doc["j"].is_string()) {
    return UnauthenticatedError("ticket refused: signed, but its payload is not a ticket");
  }
  Ticket t{doc["n"].get<std::string>(),
           doc["r"].get<std::string>(),
           doc["e"].get<int64_t>(),
           doc["p"].get<std::string>(),
           doc["j"].get<std::string>(),
           doc.contains("t") && doc["t"].is_string() ? doc["t"].get<std::string>() : std::string()};
  if (t.node_id != serving_node_id) {
    return PermissionDeniedError(
        fmt::format("ticket refused: it is for node '{}', this is node '{}'", t.node_id, serving_node_id));
  }
  if (now_ms >= t.expires_at_ms) {
    return DeadlineExceededError(fmt::format("ticket refused: expired at {} ms, now is {} ms ({} ms ago)",
                                             t.expires_at_ms, now_ms, now_ms - t.expires_at_ms));
  }
  if (t.root.empty() || t.root.front() != '/') {
    return PermissionDeniedError(fmt::format("ticket refused: its root '{}' is not an absolute path", t.root));
  }
  return t;
}

}  // namespace anneal::transfer
