// HttpServer: the coordinator's HTTP port (common/http_server.h, Boost.Beast), on --http-bind (default off).
//
//   GET /, /ui/... the web console's static files (coordinator/web_console.h; public: they carry no data, every
//                  figure comes from /api/v1 with the token the user types)
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
//   /api/v1/...    the REST API (coordinator/rest_api.h, docs/rest-api.md): every operation of the CLI, carried to
//                  the coordinator's own ROUTER as the CLI's pb::ClientRequest by the RestGateway (same roles);
//                  /api/v1/jobs/{id}/stream is server-sent events (coordinator/rest_stream.h)
//   GET /api/openapi.json  the OpenAPI 3 document of /api/v1 (coordinator/openapi.json, embedded; public)
// The console and /api/openapi.json are public. The /api/* and /metrics snapshot routes need `Authorization: Bearer
// <token>` of a cluster admin (checked by HttpServerOptions.authenticate), except /metrics when public_metrics is set;
// their routing is the pure RouteHttpRequest (coordinator/http_router.h). /api/v1 is the API; the snapshot routes stay
// for scripts. The event loop publishes a snapshot (at most once a second, Publish()); the HTTP thread serves the
// latest snapshot, so HTTP never touches the Coordinator's state.
//
// Limits (common/http_server.h): at most max_connections connections at once (one more is answered 503 and
// closed); request line + headers over max_request_bytes get 431, a body over max_request_bytes (max_submit_bytes
// for POST /api/v1/jobs, /api/v1/pipelines, /api/v1/schedules) 413; a connection silent for request_timeout is
// closed. An accept error (EMFILE, ENFILE, ENOBUFS...) is logged and accepting resumes after 100 ms.
// Streams: at most max_streams open, max_streams_per_token per bearer token; more are refused 429.
//
// Thread-safety: Publish() from the event loop thread; requests are served on the HttpServer's own thread and the
// REST gateway's thread; the snapshot is swapped under a mutex.
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
  size_t max_submit_bytes = 1 << 20;  // body of POST /api/v1/jobs, /pipelines, /schedules
  // The REST gateway (coordinator/rest_gateway.h): the ROUTER as a client reaches it; empty: /api/v1 is 503.
  std::string gateway_endpoint;
  std::string gateway_server_key;  // CurveZMQ public key of the ROUTER; empty: plaintext
  std::chrono::milliseconds gateway_timeout{10000};
  size_t max_streams = 64;                            // SSE streams open at once
  size_t max_streams_per_token = 4;                   // ... per bearer token
  std::chrono::milliseconds stream_heartbeat{15000};  // an SSE comment at least this often
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
