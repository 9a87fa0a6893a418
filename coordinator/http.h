// HttpServer: read-only HTTP endpoint of the coordinator (Boost.Beast), on --http-bind (default off).
//
//   GET /metrics   Prometheus text (coordinator/metrics.h lists the series): jobs by state and team, queue
//                  depth and wait-time histograms per team, scheduling pass latency, fair share, preemptions
//   GET /api/jobs  JSON: {"jobs": [ {job_id, name, state, attempt, epoch, priority, placement nodes}, ... ]}
//                  the active (non-terminal) jobs
//   GET /api/nodes JSON: {"nodes": [ {node_id, state, slots, address, last_heartbeat_ms}, ... ]}
//   GET /api/queue JSON: {"teams": [ {name, weight, quotas: [{label, guaranteed, max}], usage_slot_seconds,
//                  slots_held}, ... ], "jobs": [ {job_id, name, team, state, priority, queue_position,
//                  wait_reason, estimated_start_ms, nodes, gpus_per_node, submit_seq, submitted_at_ms,
//                  preemptions, preempt_reason}, ... ]}: what `anneal queue` shows, every team
// Every route needs `Authorization: Bearer <token>` (checked by HttpServerOptions.authenticate), except /metrics
// when public_metrics is set; the routing is the pure RouteHttpRequest (coordinator/http_router.h).
// The event loop publishes a snapshot (at most once a second, Publish()); the HTTP thread serves the latest
// snapshot, so HTTP never touches the Coordinator's state.
//
// Limits: at most max_connections connections at once (one more is answered 503 and closed); a request whose
// line, headers and body exceed max_request_bytes gets 431 and is closed; a connection silent for
// request_timeout is closed. An accept error (EMFILE, ENFILE, ENOBUFS...) is logged (warn, at most every 10 s)
// and accepting resumes after 100 ms: the server never stops accepting until Stop().
//
// Thread-safety: Publish() from the event loop thread; requests are served on the HttpServer's own thread;
// the snapshot is swapped under a mutex.
// Ownership: owns its thread and sockets; Stop() (or the destructor) joins the thread.
//
// Example:
//   HttpServer http;
//   RETURN_IF_ERROR(http.Start("127.0.0.1:7071", {.authenticate = ClusterAdminTokenAuthenticator(store, &clock)}));
//   server.SetRoundHook([&] { http.Publish(core); });
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "coordinator/http_router.h"

namespace anneal::coordinator {

class Coordinator;

struct HttpServerOptions {
  bool public_metrics = false;     // GET /metrics without a token
  HttpAuthenticator authenticate;  // thread-safe; called on the HTTP thread (empty: only public routes)
  size_t max_connections = 64;
  size_t max_request_bytes = 16384;
  std::chrono::milliseconds request_timeout{5000};
};

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();
  // HOST:PORT (port 0 picks one; port() tells which).
  Status Start(const std::string& host_port, HttpServerOptions options = {});
  void Stop();
  uint16_t port() const { return port_; }
  void Publish(const Coordinator& core);
  // The response to one parsed request from the current snapshot (what a connection is answered; thread-safe).
  HttpResponse Respond(const HttpRequest& request) const;
  // Accept errors seen so far (EMFILE...), each followed by a retry.
  uint64_t accept_errors() const;

  // The bodies served, built from the coordinator's in-memory view (public for tests).
  static std::string RenderMetrics(const Coordinator& core);
  static std::string RenderJobs(const Coordinator& core);
  static std::string RenderNodes(const Coordinator& core);
  static std::string RenderQueue(const Coordinator& core);
  // /api/pipelines and /api/pipelines/<id>: the newest runs (coordinator/pipeline_http.cc).
  static void RenderPipelines(const Coordinator& core, HttpSnapshot* snapshot);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
  int64_t last_publish_ms_ = 0;
};

}  // namespace anneal::coordinator
