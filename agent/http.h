// AgentHttpServer: the agent's HTTP endpoint (Boost.Beast), on `metrics_bind` (default off; docs/agent.md).
//
//   GET /metrics   Prometheus text: whatever options.render returns (agent/metrics_service.h), computed on the
//                  server's own thread per request, so the agent's loop never waits for a scrape
//
// Every request must carry `Authorization: Bearer <token>` with the token of `metrics_token_file` (compared in
// constant time, as hashes); nothing is served without it, not even a 404. Outcomes:
//   200 the metrics; 401 (WWW-Authenticate: Bearer) when the header is missing, is not a Bearer token, or the
//   token is wrong (the body says which); 405 for a method other than GET; 404 for another path;
//   431 / 413 when the request line + headers / body exceed max_request_bytes (then closed);
//   503 when max_connections connections are already open (answered without reading, then closed).
// One request per connection; a connection silent for request_timeout is closed. Accept errors (EMFILE...) are
// retried after 100 ms: the server keeps accepting until Stop().
//
// Thread-safety: Start/Stop from one thread; the server runs its own thread, which calls options.render
// (which must be safe to call from it). Ownership: owns its thread and sockets; Stop() (or the destructor)
// joins the thread.
//
// Example:
//   AgentHttpServer http;
//   RETURN_IF_ERROR(http.Start("0.0.0.0:9401", {.token = token, .render = [&] { return service.Render(); }}));
//   ... curl -H "Authorization: Bearer $TOKEN" http://node:9401/metrics
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace anneal::agent {

struct AgentHttpOptions {
  std::string token;  // required: Start refuses an empty one
  std::function<std::string()> render;
  size_t max_connections = 16;
  size_t max_request_bytes = 8192;
  std::chrono::milliseconds request_timeout{5000};
};

class AgentHttpServer {
 public:
  AgentHttpServer();
  ~AgentHttpServer();
  AgentHttpServer(const AgentHttpServer&) = delete;
  AgentHttpServer& operator=(const AgentHttpServer&) = delete;

  // HOST:PORT (port 0 picks a free one; port() tells which). INVALID_ARGUMENT for a malformed address, an empty
  // token or no render function; UNAVAILABLE when the address cannot be bound.
  Status Start(const std::string& host_port, AgentHttpOptions options);
  void Stop();
  uint16_t port() const { return port_; }
  uint64_t refused_requests() const;  // 401s so far (for tests and logs)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
};

}  // namespace anneal::agent
