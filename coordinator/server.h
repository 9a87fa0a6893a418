// Server: the coordinator's ZeroMQ event loop. One ROUTER socket serves both channels; the MessageKind of each
// frame's header says which (AgentToCoordinator from agents' DEALERs, ClientRequest from clients' DEALER or
// REQ sockets). The loop owns the Coordinator: it drains up to `max_batch` messages, runs Tick(), commits the
// round with Flush() (one synced write) and only then sends the replies and orders (group commit).
// SubmitJob specs are resolved on SpecWorkers threads (coordinator/spec_workers.h) and accepted when they return.
// Garbage and wrong-version frames get an Error reply (CoordinatorToAgent.error or ClientReply.error, by the
// kind the header names; ClientReply when it names none) and the loop goes on.
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
#include <set>
#include <string>

#include <zmq.hpp>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "coordinator/spec_workers.h"
#include "protocol/framing.h"

namespace anneal::coordinator {

struct ServerOptions {
  std::string bind = "tcp://127.0.0.1:7070";
  size_t max_batch = 1024;  // messages per round (per synced write)
  int spec_threads = 2;     // SubmitJob specs are parsed and resolved on these threads (0: on the loop)
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

  ServerOptions options_;
  Coordinator* core_;
  Clock* clock_;
  zmq::context_t context_;
  zmq::socket_t router_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::set<std::string> req_peers_;  // REQ clients: replies need the empty delimiter frame
  std::function<void()> round_hook_;
  std::unique_ptr<SpecWorkers> workers_;
};

}  // namespace anneal::coordinator
