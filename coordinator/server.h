// Server: the coordinator's ZeroMQ event loop. One ROUTER socket serves both channels; the MessageKind of each
// frame's header says which (AgentToCoordinator from agents' DEALERs, ClientRequest from clients' DEALER or
// REQ sockets). The loop owns the Coordinator: it drains up to `max_batch` messages, runs Tick(), commits the
// round with Flush() (one synced write) and only then sends the replies and orders (group commit).
// SubmitJob specs are resolved on SpecWorkers threads (coordinator/spec_workers.h) and accepted when they return.
// Garbage and wrong-version frames get an Error reply (CoordinatorToAgent.error or ClientReply.error, by the
// kind the header names; ClientReply when it names none) and the loop goes on.
//
// Transport security: with ServerOptions.curve set the ROUTER is a CurveZMQ server (protocol/curve.h): every
// peer must know the coordinator's public key, and plaintext peers fail the handshake (ZeroMQ refuses them
// before any message is read). Failed handshakes are logged (warn, at most once per 10 s with a count).
// Frames above max_message_bytes (ZMQ_MAXMSGSIZE) close that peer's connection before they are buffered.
//
// Thread-safety: Run() on one thread; RequestStop() from any thread.
// Ownership: borrows the Coordinator and the Clock; owns its ZeroMQ context and socket.
//
// Example:
//   Server server({.bind = "tcp://127.0.0.1:7070"}, &core, &clock);
//   RETURN_IF_ERROR(server.Bind());
//   RETURN_IF_ERROR(server.Run());   // until SIGTERM (common/shutdown.h) or RequestStop()
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <set>
#include <string>

#include <zmq.hpp>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "coordinator/spec_workers.h"
#include "protocol/curve.h"
#include "protocol/framing.h"

namespace anneal::coordinator {

struct ServerOptions {
  std::string bind = "tcp://127.0.0.1:7070";
  size_t max_batch = 1024;  // messages per round (per synced write)
  int spec_threads = 2;     // SubmitJob specs are parsed and resolved on these threads (0: on the loop)
  int64_t max_message_bytes = 16 << 20;     // ZMQ_MAXMSGSIZE: a larger frame drops its peer's connection
  std::optional<protocol::CurveKeyPair> curve;  // CurveZMQ server keys; nullopt: plaintext (--insecure-plaintext)
};

class Server {
 public:
  Server(ServerOptions options, Coordinator* core, Clock* clock);
  ~Server();

  Status Bind();
  // The bound endpoint with the real port (useful with port 0 or '*').
  std::string endpoint() const { return endpoint_; }
  // Serves until a shutdown signal (common/shutdown.h) or RequestStop(). A failed commit ends it with an error.
  Status Run();
  void RequestStop() { stop_.store(true); }
  // Called after every round (HTTP snapshots, benchmarks); on the loop thread.
  void SetRoundHook(std::function<void()> hook) { round_hook_ = std::move(hook); }

 private:
  void Dispatch(protocol::Frames& frames);
  void SendAll(std::vector<Outgoing>& out);
  void DrainMonitor();  // logs failed handshakes (wrong key, plaintext peer)

  ServerOptions options_;
  Coordinator* core_;
  Clock* clock_;
  zmq::context_t context_;
  zmq::socket_t router_;
  std::unique_ptr<zmq::socket_t> monitor_;
  uint64_t failed_handshakes_ = 0;  // since the last warning
  int64_t last_handshake_warning_ms_ = 0;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::set<std::string> req_peers_;  // REQ clients: replies need the empty delimiter frame
  std::function<void()> round_hook_;
  std::unique_ptr<SpecWorkers> workers_;
};

}  // namespace anneal::coordinator
