// CoordinatorClient: one request, one reply, with the coordinator's client channel (pb::ClientRequest /
// pb::ClientReply over a ZeroMQ DEALER connected to the coordinator's ROUTER; protocol/framing.h).
//
// Every call has a deadline: a coordinator that does not answer in time is UNAVAILABLE with the message
// "coordinator not reachable at tcp://...: no reply within 5 s; is it running? (anneal up)", never a hang.
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

class CoordinatorClient {
 public:
  CoordinatorClient(std::string address, std::string token, std::chrono::milliseconds timeout);

  // Sends `request` (token and request_id are filled in) and waits up to timeout + extra_wait for the reply.
  // extra_wait covers long polls (WatchJob's timeout_ms).
  StatusOr<pb::ClientReply> Call(pb::ClientRequest request,
                                 std::chrono::milliseconds extra_wait = std::chrono::milliseconds(0));

  const std::string& address() const { return address_; }

 private:
  Status Connect();

  std::string address_;
  std::string token_;
  std::chrono::milliseconds timeout_;
  uint64_t next_request_id_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> socket_;
};

}  // namespace anneal::cli
