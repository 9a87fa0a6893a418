#include "agent/http.h"

#include <fmt/format.h>

#include <atomic>
#include <string_view>

#include "common/http_server.h"
#include "common/secret.h"

namespace anneal::agent {

struct AgentHttpServer::Impl {
  AgentHttpOptions options;
  std::string token_hash;
  std::atomic<uint64_t> refused{0};
  HttpServer server;  // last: stopped (and its handler's calls ended) before the members above go

  // The bearer token check comes first: an unauthenticated request learns nothing, not even which paths exist.
  HttpResponse Respond(const HttpRequest& request) {
    constexpr std::string_view kScheme = "Bearer ";
    const std::string_view authorization = request.authorization;
    std::string why;
    if (authorization.empty()) {
      why = "no Authorization header; send 'Authorization: Bearer <token of the agent's metrics_token_file>'";
    } else if (authorization.size() <= kScheme.size() || authorization.substr(0, kScheme.size()) != kScheme) {
      why = "the Authorization header is not 'Bearer <token>'";
    } else if (!SecretEquals(SecretHash(authorization.substr(kScheme.size())), token_hash)) {
      why = "wrong bearer token (not the one in the agent's metrics_token_file)";
    }
    if (!why.empty()) {
      refused.fetch_add(1);
      return {.status = 401,
              .body = "401 unauthorized: " + why + "\n",
              .headers = {{"WWW-Authenticate", "Bearer realm=\"anneal-agent\""}}};
    }
    if (request.method != "GET") {
      return {.status = 405,
              .body = fmt::format("405 method not allowed: only GET is served, not {}\n",
                                  std::string_view(request.method).substr(0, 16)),
              .headers = {}};
    }
    if (HttpPath(request.target) != "/metrics")
      return {.status = 404, .body = "404 not found: try /metrics\n", .headers = {}};
    return {.status = 200, .content_type = "text/plain; version=0.0.4", .body = options.render(), .headers = {}};
  }
};

AgentHttpServer::AgentHttpServer() : impl_(std::make_unique<Impl>()) {}
AgentHttpServer::~AgentHttpServer() {
  Stop();
}

Status AgentHttpServer::Start(const std::string& host_port, AgentHttpOptions options) {
  if (host_port.rfind(':') == std::string::npos) {
    return InvalidArgumentError(fmt::format("metrics_bind '{}': expected HOST:PORT", host_port));
  }
  if (options.token.empty())
    return InvalidArgumentError("the metrics endpoint needs a bearer token (metrics_token_file)");
  if (!options.render) return InvalidArgumentError("the metrics endpoint has nothing to render");
  impl_->token_hash = SecretHash(options.token);
  impl_->options = std::move(options);
  HttpServerOptions http;
  http.handler = [impl = impl_.get()](std::shared_ptr<HttpExchange> exchange) {
    exchange->Respond(impl->Respond(exchange->request()));
  };
  http.max_connections = impl_->options.max_connections;
  http.max_request_bytes = impl_->options.max_request_bytes;
  http.request_timeout = impl_->options.request_timeout;
  http.name = "metrics HTTP";
  http.size_hint = " (the agent's metrics request limit)";
  RETURN_IF_ERROR(impl_->server.Start(host_port, std::move(http), "metrics_bind"));
  port_ = impl_->server.port();
  return Status::Ok();
}

void AgentHttpServer::Stop() {
  impl_->server.Stop();
}

uint64_t AgentHttpServer::refused_requests() const {
  return impl_->refused.load();
}

}  // namespace anneal::agent
