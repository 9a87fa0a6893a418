// Capability tickets: the coordinator's signed permission for one reader to read one directory on one node.
//
// The coordinator holds an Ed25519 signing key (libsodium crypto_sign); every agent pins its public key (learned
// at registration). To let node B (or a CLI) read a tree on node A, the coordinator signs a Ticket
// {node_id = A, root, expires_at_ms, purpose, job_id} and hands the token to the reader, who presents it with
// every request to A's TransferServer. A checks the signature, that the ticket is for itself, that it has not
// expired, and serves only files inside `root`. No bulk data passes through the coordinator.
//
// Token format (printable, URL-safe): "ant1.<base64url(payload JSON)>.<base64url(64-byte signature)>", the
// signature over the payload bytes. Tokens are bounded (kMaxTicketBytes); roots of sane length give < 4 KiB.
// Key files in <dir>: transfer-sign.key (secret key, 128 hex digits, mode 0600, created with O_EXCL) and
// transfer-sign.pub (public key, 64 hex digits = the text agents pin). A key file that is unreadable, malformed,
// readable by others, or whose public key is not the secret key's is an error naming the file, never replaced.
//
// VerifyTicket outcomes:
//   OK                    the ticket, for serving_node_id, unexpired, signed by signer_public_key
//   UNAUTHENTICATED       malformed token (not "ant1.", bad base64, truncated, bad JSON, oversized) or a bad
//                         signature (signed by another key, or altered) -- the message says which
//   PERMISSION_DENIED     the ticket is for another node (both node ids named)
//   DEADLINE_EXCEEDED     expired (expiry and now named)
//   INVALID_ARGUMENT      signer_public_key is not 64 hex digits
//
// Thread-safety: TicketSigner is immutable after LoadOrCreate (Sign is const and thread-safe); VerifyTicket is
// stateless.
//
// Example (coordinator):
//   ASSIGN_OR_RETURN(TicketSigner signer, TicketSigner::LoadOrCreate(state_dir));
//   const std::string token = signer.Sign({.node_id = "gpu-a", .root = "/models/llama", .expires_at_ms = now + 600000,
//                                          .purpose = "stage", .job_id = "j-12"});
// Example (agent serving):
//   ASSIGN_OR_RETURN(Ticket t, VerifyTicket(token, pinned_signer_key, my_node_id, NowMs()));
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace anneal::transfer {

inline constexpr size_t kMaxTicketBytes = 8192;
inline constexpr const char* kTicketSecretKeyFile = "transfer-sign.key";
inline constexpr const char* kTicketPublicKeyFile = "transfer-sign.pub";

struct Ticket {
  std::string node_id;        // the serving node this ticket is for (a server refuses tickets for other nodes)
  std::string root;           // absolute path on the serving node; only files inside it are served
  int64_t expires_at_ms = 0;  // wall clock (ms since epoch)
  std::string purpose;        // "stage", "replicate", "fetch" (logged by the server)
  std::string job_id;         // for the server's log
  // The job's team: a server running as root reads the files as the team's rank user (ServerOptions::read_as), so
  // a ticket never reaches what the team could not read itself. Empty: read as the server's own user.
  std::string team;
  bool operator==(const Ticket&) const = default;
};

class TicketSigner {
 public:
  // Loads <dir>/transfer-sign.{key,pub}, or creates both when neither exists (dir created if missing).
  static StatusOr<TicketSigner> LoadOrCreate(const std::string& dir);
  // A signer from a fresh random key, kept in memory only (tests, tools).
  static TicketSigner Generate();
  // Public key: 64 lowercase hex digits (32 bytes); what agents pin.
  const std::string& public_key() const { return public_key_hex_; }
  // The token (see the format above).
  std::string Sign(const Ticket& ticket) const;

 private:
  TicketSigner() = default;
  std::string secret_key_;      // 64 raw bytes
  std::string public_key_hex_;  // 64 hex digits
};

StatusOr<Ticket> VerifyTicket(std::string_view token, std::string_view signer_public_key,
                              std::string_view serving_node_id, int64_t now_ms);

}  // namespace anneal::transfer
