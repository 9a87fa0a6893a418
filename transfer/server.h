// TransferServer: each agent's file server. Other agents (staging a job's model and dataset, replicating a
// checkpoint) and the CLI (`anneal fetch`) read files from it directly, peer to peer; the coordinator only
// authorizes, by signing tickets (transfer/ticket.h).
//
// Transport: a ZeroMQ ROUTER with CurveZMQ (the agent's own server keypair: protocol::LoadOrCreateServerKeys on a
// directory the agent names), so the channel is encrypted and the server authenticated by its pinned public
// key. Wire format: transfer/transfer.proto (TransferRequest / TransferReply); a Read reply carries the bytes in
// a second frame. Two requests, each with a ticket:
//   Manifest{ticket, subpath}          -> the manifest of <ticket.root>/<subpath> (subpath "" = the root),
//                                         built through the server's HashCache (hashed once per file change)
//   Read{ticket, path, offset, length} -> bytes [offset, offset+length) of <ticket.root>/<path> (fewer at the
//                                         end of the file) and the file's current size; length <= kMaxChunkBytes
//
// Every request is checked, in order, and refused with an error reply (never a crash, never silence):
//   INVALID_ARGUMENT   not one frame, larger than kMaxRequestBytes, not a TransferRequest
//   UNAVAILABLE        no signer public key yet (the agent has not registered)
//   UNAUTHENTICATED / PERMISSION_DENIED / DEADLINE_EXCEEDED   the ticket (VerifyTicket's outcomes)
//   INVALID_ARGUMENT   neither Manifest nor Read; a Read's length 0 or > kMaxChunkBytes
//   PERMISSION_DENIED  a path that leaves the root: "..", absolute, or resolving (realpath) outside the
//                      resolved root through a symlink -- the message names the path
//   NOT_FOUND          no such file under the root
// Frames above 1 MiB are dropped by ZeroMQ itself (ZMQ_MAXMSGSIZE: the peer is disconnected).
// Each served request is logged at debug level with the ticket's purpose and job id; refusals at warn.
//
// Threads: one proxy thread (ROUTER <-> inproc DEALER), `threads` workers, two ZeroMQ I/O threads (Curve); the
// destructor stops and joins them. A first Manifest of a large tree keeps one worker hashing (about 1 GB/s);
// Reads go on in the others.
// Thread-safety: SetSignerPublicKey, endpoint, public_key, stats and LocalManifest may be called from any thread.
//
// Example:
//   ASSIGN_OR_RETURN(auto keys, protocol::LoadOrCreateServerKeys(state_dir + "/transfer"));
//   ASSIGN_OR_RETURN(auto server, TransferServer::Start({.bind_endpoint = "tcp://10.1.2.3:0", .node_id = "gpu-a",
//                                                        .signer_public_key = "", .server_keys = keys}));
//   register_message.set_transfer_endpoint(server->endpoint());   // and server->public_key()
//   ... later, from the registration reply: server->SetSignerPublicKey(reply.transfer_signer_key());
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "common/status.h"
#include "protocol/curve.h"
#include "transfer/manifest.h"

namespace anneal::transfer {

inline constexpr uint64_t kMaxChunkBytes = 4ull << 20;  // one Read's bytes
inline constexpr size_t kMaxRequestBytes = 64 << 10;    // one request message

struct ServerOptions {
  std::string bind_endpoint;  // e.g. "tcp://10.1.2.3:0" (port 0: pick one) or "tcp://*:7070"
  std::string node_id;
  // May be empty until the coordinator tells it (then every request is refused UNAVAILABLE).
  std::string signer_public_key;
  protocol::CurveKeyPair server_keys;
  std::function<int64_t()> now_ms;  // wall clock, injectable for tests (empty: the system clock)
  int threads = 2;
  std::string hash_cache_path;  // optional: HashCache persistence (JSON), so a restart does not rehash
  // Who reads a ticket's files: (uid, gid) for the ticket's team. Set by an agent running as root: each request's
  // opens and stats run with the worker thread's filesystem identity switched to it (setfsuid/setfsgid are
  // per thread), so a root server never serves what the team's ranks could not read (EACCES -> PERMISSION_DENIED).
  // An error refuses the request. Empty: files are read as the server's own user.
  std::function<StatusOr<std::pair<uid_t, gid_t>>(const std::string& team)> read_as;
};

// Counters since Start (tests count reads; the agent can export them as metrics).
struct ServerStats {
  uint64_t manifest_requests = 0;
  uint64_t read_requests = 0;
  uint64_t bytes_served = 0;
  uint64_t refused = 0;  // requests answered with an error
};

class TransferServer {
 public:
  // Binds and starts the threads. INVALID_ARGUMENT for bad options (empty node_id, threads < 1, malformed keys),
  // UNAVAILABLE naming the endpoint when it cannot bind.
  static StatusOr<std::unique_ptr<TransferServer>> Start(ServerOptions options);
  ~TransferServer();  // stops and joins
  TransferServer(const TransferServer&) = delete;
  TransferServer& operator=(const TransferServer&) = delete;

  // The bound endpoint with the real port ("tcp://10.1.2.3:41234"); a "*" bind reports "tcp://0.0.0.0:<port>"
  // (the agent advertises its own address with that port).
  std::string endpoint() const;
  const std::string& public_key() const;
  void SetSignerPublicKey(std::string key);
  ServerStats stats() const;
  // The manifest of a local path through the server's HashCache (the agent computes a tree's id for the
  // coordinator at stage time; the files are then not hashed again when a reader asks). Errors: BuildManifest's.
  StatusOr<Manifest> LocalManifest(const std::string& path);

  struct Impl;

 private:
  explicit TransferServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anneal::transfer
