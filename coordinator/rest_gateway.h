// RestGateway: carries the REST API's requests (coordinator/rest_api.h) to the coordinator's own ROUTER as the
// very pb::ClientRequest the CLI sends, so the REST API has exactly the ZeroMQ API's roles and limits, with no
// second authorization code.
//
// One gateway thread owns one ZeroMQ DEALER per distinct bearer token (at most max_sockets, least recently used
// first out; a socket with requests in flight is never closed), connected to the server's endpoint with CurveZMQ
// client keys when the server uses Curve. The coordinator sees each token as its own peer, so its per-peer
// limits (WatchJob long polls, log fetches) apply per user, not to the whole gateway.
// Call() queues a request from any thread (it never blocks on ZeroMQ) and the gateway thread answers it later:
//   - the coordinator's ClientReply (its `error` may be set: the caller maps it),
//   - DEADLINE_EXCEEDED when no reply came within timeout + extra_wait ("the coordinator did not answer ..."),
//   - UNAVAILABLE when the request could not be sent, or the gateway stopped before an answer.
// Every accepted call is answered exactly once, on the gateway thread (so `done` must be quick and thread-safe;
// it may call Call() again).
//
// Thread-safety: Call() from any thread; Start/Stop from one thread.
// Ownership: owns its thread, ZeroMQ context and sockets. Stop() (or the destructor) answers the calls still in
// flight with UNAVAILABLE and joins the thread.
//
// Example:
//   RestGateway gateway;
//   RETURN_IF_ERROR(gateway.Start({.endpoint = "tcp://127.0.0.1:7070", .server_public_key = key}));
//   pb::ClientRequest req;
//   req.set_token(bearer);
//   req.mutable_whoami();
//   gateway.Call(std::move(req), {}, [](StatusOr<pb::ClientReply> reply) { ... });
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::coordinator {

struct RestGatewayOptions {
  std::string endpoint;                      // the ROUTER as a client reaches it (tcp://127.0.0.1:7070)
  std::string server_public_key;             // the server's CurveZMQ key; empty: plaintext
  size_t max_sockets = 64;                   // DEALERs kept (one per distinct token)
  std::chrono::milliseconds timeout{10000};  // per request, plus its long poll's own wait
};

class RestGateway {
 public:
  using Done = std::function<void(StatusOr<pb::ClientReply>)>;

  RestGateway();
  ~RestGateway();
  RestGateway(const RestGateway&) = delete;
  RestGateway& operator=(const RestGateway&) = delete;

  // INVALID_ARGUMENT without an endpoint; INTERNAL when the wake-up eventfd cannot be made.
  Status Start(RestGatewayOptions options);
  void Stop();
  // Sends `request` (its token says who; request_id is the gateway's) and calls `done` with the answer.
  void Call(pb::ClientRequest request, std::chrono::milliseconds extra_wait, Done done);
  size_t open_sockets() const;  // DEALERs open now (tests)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace anneal::coordinator
