// HttpServer: read-only HTTP endpoint of the coordinator (Boost.Beast), on --http-bind (default off).
//
//   GET /metrics   Prometheus text: jobs by state, pending queue length, nodes by state, slots used/total
//   GET /api/jobs  JSON: {"jobs": [ {job_id, name, state, attempt, epoch, priority, placement nodes}, ... ]}
//                  the active (non-terminal) jobs
//   GET /api/nodes JSON: {"nodes": [ {node_id, state, slots, address, last_heartbeat_ms}, ... ]}
// The event loop publishes a snapshot (at most once a second, Publish()); the HTTP thread serves the latest
// snapshot, so HTTP never touches the Coordinator's state.
//
// Thread-safety: Publish() from the event loop thread; requests are served on the HttpServer's own thread;
// the snapshot is swapped under a mutex.
// Ownership: owns its thread and sockets; Stop() (or the destructor) joins the thread.
//
// Example:
//   HttpServer http;
//   RETURN_IF_ERROR(http.Start("127.0.0.1:7071"));
//   server.SetRoundHook([&] { http.Publish(core); });
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace anneal::coordinator {

class Coordinator;

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();
  // HOST:PORT (port 0 picks one; port() tells which).
  Status Start(const std::string& host_port);
  void Stop();
  uint16_t port() const { return port_; }
  void Publish(const Coordinator& core);

  // The bodies served, built from the coordinator's in-memory view (public for tests).
  static std::string RenderMetrics(const Coordinator& core);
  static std::string RenderJobs(const Coordinator& core);
  static std::string RenderNodes(const Coordinator& core);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
  int64_t last_publish_ms_ = 0;
};

}  // namespace anneal::coordinator
