// CoordinatorClient: one request, one reply, with the coordinator's client channel (pb::ClientRequest /
// pb::ClientReply over a ZeroMQ DEALER connected to the coordinator's ROUTER; protocol/framing.h).
//
// Every call has a deadline: a coordinator that does not answer in time is UNAVAILABLE with the message
// "coordinator not reachable at tcp://...: no reply within 5 s; is it running? (anneal up)", never a hang.
// The channel is CurveZMQ with the coordinator's pinned public key (ClientTransport.server_key) and a fresh
// client keypair, or plaintext only with insecure_plaintext. ZeroMQ gives no reply when the key is wrong, so
// the deadline message says why when the socket monitor saw it: a handshake the coordinator closed ("the server
// key (from ...) is probably wrong"), a plaintext client refused by a Curve coordinator, or (no connection seen)
// that the coordinator is not running or the key may be wrong. With neither a key nor insecure_plaintext, Call
// is FAILED_PRECONDITION saying where to set the key.
// A reply whose Error is not OK becomes that Status (UNAUTHENTICATED, NOT_FOUND, ...). Late replies to an earlier,
// timed-out request are recognized by request_id and dropped.
//
// Thread-safety: one client per thread (it owns a ZeroMQ socket).
// Ownership: owns its context and socket; closing them never blocks (linger 0).
//
// Example:
//   CoordinatorClient client("tcp://127.0.0.1:7070", token, std::chrono::seconds(5));
//   pb::ClientRequest req;
//   req.mutable_list_nodes();
//   ASSIGN_OR_RETURN(pb::ClientReply reply, client.Call(req));
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::cli {

struct ClientTransport {
  std::string server_key;               // the coordinator's CurveZMQ public key (Z85)
  std::string server_key_from;          // where it came from ("--server-key", "<config>: server_key"), for messages
  bool insecure_plaintext = false;      // no Curve (a coordinator run with --insecure-plaintext)
  int64_t max_reply_bytes = 256 << 20;  // ZMQ_MAXMSGSIZE of this client's socket
};

class CoordinatorClient {
 public:
  CoordinatorClient(std::string address, std::string token, std::chrono::milliseconds timeout,
                    ClientTransport transport = {});

  // Sends `request` (token and request_id are filled in) and waits up to timeout + extra_wait for the reply.
  // extra_wait covers long polls (WatchJob's timeout_ms).
  StatusOr<pb::ClientReply> Call(pb::ClientRequest request,
                                 std::chrono::milliseconds extra_wait = std::chrono::milliseconds(0));

  const std::string& address() const { return address_; }

 private:
  Status Connect();
  // Why no reply came, from the socket monitor's events (handshake failed, never connected, ...).
  std::string NoReplyReason(std::chrono::milliseconds waited, size_t request_bytes);

  std::string address_;
  std::string token_;
  std::chrono::milliseconds timeout_;
  uint64_t next_request_id_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> socket_;
  ClientTransport transport_;
  std::unique_ptr<zmq::socket_t> monitor_;
  uint64_t socket_generation_ = 0;
};

}  // namespace anneal::cli
