// CurveZMQ for Anneal's ZeroMQ channels: the coordinator's long-term keypair, the pinned server key of clients
// and agents, and the socket options that turn Curve on.
//
// Keys are Z85 text (40 characters for 32 bytes), as zmq_curve_keypair makes them. The coordinator keeps its
// keypair in its state directory:
//   curve.key   the secret key, mode 0600 (created with O_EXCL and 0600, never readable by others)
//   curve.pub   the public key, mode 0644 (what clients and agents pin; `anneal up` copies it)
// Each file holds the key and a newline. LoadOrCreateServerKeys makes both at the first start and reuses them
// afterwards; a file that is unreadable, not a Z85 key, or whose public key does not belong to the secret key
// is an error naming the file (never silently replaced: clients pin the old public key).
// Clients and agents make a fresh keypair per socket (ConfigureCurveClient): the server authenticates itself
// with its pinned key; client keys are not checked (any client key may connect; the client channel's token and
// the agent join credential say who it is).
//
// Thread-safety: stateless functions; a socket must be configured before connect/bind, by its one thread.
//
// Example:
//   ASSIGN_OR_RETURN(CurveKeyPair keys, LoadOrCreateServerKeys(state_dir));
//   RETURN_IF_ERROR(ConfigureCurveServer(router, keys));          // before router.bind(...)
//   ...
//   RETURN_IF_ERROR(ConfigureCurveClient(dealer, server_public));  // before dealer.connect(...)
#pragma once

#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/status.h"

namespace anneal::protocol {

inline constexpr size_t kCurveKeyTextSize = 40;  // Z85 of 32 bytes
inline constexpr const char* kCurveSecretKeyFile = "curve.key";
inline constexpr const char* kCurvePublicKeyFile = "curve.pub";

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// libzmq was built with CurveZMQ (libsodium): zmq_has("curve").
bool CurveAvailable();

// A fresh keypair. FAILED_PRECONDITION when libzmq has no Curve.
StatusOr<CurveKeyPair> GenerateCurveKeyPair();

// OK when `key` is 40 Z85 characters that decode to 32 bytes; INVALID_ARGUMENT naming `what` (where the key came
// from: "--server-key", "/home/u/.anneal/config: server_key") and the problem otherwise.
Status CheckCurveKeyText(std::string_view key, std::string_view what);

// Reads a one-key file (leading/trailing whitespace ignored) and checks it; errors name the file.
StatusOr<std::string> ReadCurveKeyFile(const std::string& path);

// <dir>/curve.key and <dir>/curve.pub: loaded when both exist (and checked to be a pair), created when neither
// does, an error naming the file when only one exists or one is unreadable or corrupt.
StatusOr<CurveKeyPair> LoadOrCreateServerKeys(const std::string& dir);

// The socket is a Curve server with `keys` (call before bind).
Status ConfigureCurveServer(zmq::socket_t& socket, const CurveKeyPair& keys);
// The socket is a Curve client of the server with public key `server_public_key`, with a fresh client keypair
// (call before connect). INVALID_ARGUMENT for a malformed key.
Status ConfigureCurveClient(zmq::socket_t& socket, const std::string& server_public_key);

}  // namespace anneal::protocol
