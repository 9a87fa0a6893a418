// Internal to anneal_transfer: what the TransferServer does with one request frame (transfer/server.h lists the
// checks and outcomes), apart from its sockets and threads, so a fuzz target can drive it directly.
//
// Handle never throws and always fills `reply`: the answer, or `error` with the refusal (counted in stats).
// A Read's bytes go to `data`.
//
// Thread-safety: Handle, SetSignerPublicKey, stats and LocalManifest may be called from any thread at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/status.h"
#include "transfer/manifest.h"
#include "transfer/server.h"
#include "transfer/ticket.h"
#include "transfer/transfer.pb.h"

namespace anneal::transfer {

class RequestHandler {
 public:
  using ReadAs = std::function<StatusOr<std::pair<uid_t, gid_t>>(const std::string& team)>;
  RequestHandler(std::string node_id, std::string signer_public_key, std::function<int64_t()> now_ms,
                 const std::string& hash_cache_path, ReadAs read_as = {});

  // `frame`: the request; `frames`: how many frames the peer sent after its routing id (1 is the only valid).
  void Handle(std::string_view frame, size_t frames, transferpb::TransferReply* reply, zmq::message_t* data);
  void SetSignerPublicKey(std::string key);
  ServerStats stats() const;
  StatusOr<Manifest> LocalManifest(const std::string& path);

 private:
  Status Dispatch(std::string_view frame, size_t frames, transferpb::TransferReply* reply, zmq::message_t* data);
  std::string SignerPublicKey() const;
  StatusOr<Ticket> Authorize(const transferpb::TransferRequest& request);
  Status ServeManifest(const Ticket& ticket, const transferpb::ManifestRequest& req, transferpb::TransferReply* reply);
  Status ServeRead(const Ticket& ticket, const transferpb::ReadRequest& req, transferpb::TransferReply* reply,
                   zmq::message_t* data);

  const std::string node_id_;
  const std::function<int64_t()> now_ms_;
  const ReadAs read_as_;
  HashCache hash_cache_;
  mutable std::mutex signer_mu_;
  std::string signer_public_key_;
  std::atomic<uint64_t> manifest_requests_{0}, read_requests_{0}, bytes_served_{0}, refused_{0};
};

}  // namespace anneal::transfer
