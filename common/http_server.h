// HttpServer: the one HTTP/1.1 server of Anneal's daemons (Boost.Beast), used by the coordinator's API port
// (coordinator/http.h) and the agent's metrics port (agent/http.h). It accepts, reads one request per
// connection within limits, and hands it to an asynchronous handler that answers now or later, whole or as a
// stream (server-sent events).
//
// Limits (the same for every daemon; the messages name the daemon's setting through the options):
//   - at most max_connections connections at once: one more is answered 503 without being read, and closed;
//   - request line + headers over max_request_bytes: 431; a body over body_limit(request head): 413; then closed;
//   - a client silent for request_timeout while sending its request (or while a response is written) is closed;
//   - an accept error (EMFILE, ENFILE, ENOBUFS...) is logged (warn, at most every 10 s) and accepting resumes after
//     100 ms: the server never stops accepting until Stop().
// One request per connection (Connection: close): no keep-alive.
//
// Answering: the handler gets an HttpExchange (shared) and must, now or later, from any thread, either
// Respond() once, or BeginStream() then Write() any number of times then Close(). An exchange dropped without an
// answer closes the connection silently. A stream whose client went away reports closed() (a write failed), so
// its producer stops. Streams have no deadline: the producer sends heartbeats.
//
// Thread-safety: Start/Stop from one thread; the server runs one thread of its own, on which the handler is
// called. HttpExchange's methods are safe from any thread; they post the work to the server's thread.
// Ownership: owns its thread and sockets; Stop() (or the destructor) joins the thread. Whoever keeps exchanges
// (a gateway thread) must drop them, and stop calling them, before the server is destroyed.
//
// Example:
//   HttpServer server;
//   RETURN_IF_ERROR(server.Start("127.0.0.1:0", {.handler = [](std::shared_ptr<HttpExchange> x) {
//     x->Respond({.status = 200, .content_type = "text/plain", .body = "hello\n"});
//   }}));
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace anneal {

struct HttpRequest {
  std::string method;         // "GET"
  std::string target;         // "/api/jobs?x=1"
  std::string authorization;  // the Authorization header's value; empty when absent
  // (default member initializers: `{method, target, authorization}` stays a complete initializer)
  std::string content_type{};  // the Content-Type header's value; empty when absent
  std::string body{};
  std::string last_event_id{};  // the Last-Event-ID header (an SSE client resuming); empty when absent
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers{};  // extra headers (WWW-Authenticate)
};

// The path of a request target without its query string.
std::string_view HttpPath(std::string_view target);

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequest& request() const = 0;
  // The whole answer; later calls (and calls after a stream began) are ignored.
  virtual void Respond(HttpResponse response) = 0;
  // Starts a response whose body is written piece by piece and ends when the connection closes (no
  // Content-Length): status line and headers now.
  virtual void BeginStream(int status, std::string content_type,
                           std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  virtual void Write(std::string chunk) = 0;
  virtual void Close() = 0;
  // The client went away (a write failed) or Close()/Respond() finished: nothing more will be sent.
  virtual bool closed() const = 0;
};

using HttpHandler = std::function<void(std::shared_ptr<HttpExchange>)>;

struct HttpServerOptions {
  HttpHandler handler;  // required
  size_t max_connections = 64;
  size_t max_request_bytes = 16384;  // request line + headers; also the body limit unless body_limit says
  std::function<size_t(const HttpRequest& head)> body_limit;  // per request (method, target, headers known)
  std::chrono::milliseconds request_timeout{5000};
  std::string name = "HTTP";  // in messages: "503: too many <name> connections (limit N<busy_hint>)"
  std::string busy_hint;      // ", http_max_connections": the setting to raise
  std::string size_hint;      // " (http_max_request_bytes)": appended to 431/413 messages
};

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // HOST:PORT (port 0 picks one; port() tells which). INVALID_ARGUMENT for a malformed address or no handler;
  // UNAVAILABLE when it cannot be bound (the message names the address and `what`, e.g. "--http-bind").
  Status Start(const std::string& host_port, HttpServerOptions options, const std::string& what = "HTTP");
  void Stop();
  uint16_t port() const { return port_; }
  uint64_t accept_errors() const;  // accept errors seen so far, each followed by a retry
  size_t open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
};

}  // namespace anneal
