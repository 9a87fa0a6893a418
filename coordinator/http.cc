#include "coordinator/http.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/job_state_machine.h"
#include "coordinator/metrics.h"
#include "coordinator/model_registry_json.h"
#include "coordinator/openapi.h"
#include "coordinator/rest_api.h"
#include "coordinator/rest_stream.h"
#include "coordinator/schedule_http.h"

namespace anneal::coordinator {

struct HttpServer::Impl {
  HttpServerOptions options;
  mutable std::mutex mu;
  HttpSnapshot snapshot;  // under mu
  RestGateway gateway;
  std::unique_ptr<RestStreams> streams;
  bool gateway_running = false;
  anneal::HttpServer server;  // last: stopped before the members above go

  HttpResponse Respond(const HttpRequest& request) const {
    HttpRouteOptions route{options.public_metrics, options.authenticate};
    std::lock_guard<std::mutex> lock(mu);
    return RouteHttpRequest(request, snapshot, route);
  }

  void Handle(const std::shared_ptr<HttpExchange>& exchange) {
    const HttpRequest& request = exchange->request();
    const std::string_view path = HttpPath(request.target);
    if (path == "/api/openapi.json") {
      HttpResponse r;
      r.content_type = "application/json";
      r.body = std::string(OpenApiDocument());
      return exchange->Respond(std::move(r));
    }
    // (web console hook: static files of the console are served here, before the API routes)
    if (path.starts_with("/api/v1/") || path == "/api/v1") return HandleRest(exchange);
    exchange->Respond(Respond(request));
  }

  void HandleRest(const std::shared_ptr<HttpExchange>& exchange) {
    RestCall call;
    if (auto refused = BuildRestCall(exchange->request(), &call)) return exchange->Respond(std::move(*refused));
    if (!gateway_running) {
      return exchange->Respond(
          RestErrorResponse(UnavailableError("this coordinator's HTTP port has no REST gateway configured")));
    }
    if (*call.route->body_field == '\0') {  // the event stream
      return streams->Open(exchange, call.request.token(), call.path_params.at(0).second);
    }
    gateway.Call(std::move(call.request), call.extra_wait,
                 [exchange, success = call.route->success_status](StatusOr<pb::ClientReply> reply) {
                   exchange->Respond(RestReplyResponse(reply, success));
                 });
  }

  size_t BodyLimit(const HttpRequest& head) const {
    const std::string_view path = HttpPath(head.target);
    const bool submit =
        head.method == "POST" && (path == "/api/v1/jobs" || path == "/api/v1/pipelines" || path == "/api/v1/schedules");
    return submit ? options.max_submit_bytes : options.max_request_bytes;
  }
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}
HttpServer::~HttpServer() {
  Stop();
}

Status HttpServer::Start(const std::string& host_port, HttpServerOptions options) {
  impl_->options = std::move(options);
  if (!impl_->options.gateway_endpoint.empty()) {
    RETURN_IF_ERROR(impl_->gateway.Start({.endpoint = impl_->options.gateway_endpoint,
                                          .server_public_key = impl_->options.gateway_server_key,
                                          .max_sockets = 64,
                                          .timeout = impl_->options.gateway_timeout}));
    impl_->gateway_running = true;
  }
  impl_->streams = std::make_unique<RestStreams>(
      &impl_->gateway, RestStreamOptions{.max_streams = impl_->options.max_streams,
                                         .max_streams_per_token = impl_->options.max_streams_per_token,
                                         .heartbeat = impl_->options.stream_heartbeat});
  anneal::HttpServerOptions http;
  http.handler = [impl = impl_.get()](std::shared_ptr<HttpExchange> exchange) { impl->Handle(exchange); };
  http.max_connections = impl_->options.max_connections;
  http.max_request_bytes = impl_->options.max_request_bytes;
  http.body_limit = [impl = impl_.get()](const HttpRequest& head) { return impl->BodyLimit(head); };
  http.request_timeout = impl_->options.request_timeout;
  http.name = "HTTP";
  http.busy_hint = ", http_max_connections";
  http.size_hint = " (http_max_request_bytes; http_max_submit_bytes for submissions)";
  RETURN_IF_ERROR(impl_->server.Start(host_port, std::move(http), "--http-bind"));
  port_ = impl_->server.port();
  spdlog::info(
      "HTTP on port {} (/api/v1 REST API{}, /metrics{}, /api/openapi.json; bearer token required; up to {} "
      "connections)",
      port_, impl_->gateway_running ? "" : " off: no gateway", impl_->options.public_metrics ? " public" : "",
      impl_->options.max_connections);
  return Status::Ok();
}

void HttpServer::Stop() {
  impl_->gateway.Stop();  // answers the calls in flight (their exchanges are answered or dropped)
  impl_->server.Stop();
}

HttpResponse HttpServer::Respond(const HttpRequest& request) const {
  return impl_->Respond(request);
}

uint64_t HttpServer::accept_errors() const {
  return impl_->server.accept_errors();
}

void HttpServer::Publish(const Coordinator& core) {
  const int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  if (now - last_publish_ms_ < 1000) return;
  last_publish_ms_ = now;
  HttpSnapshot fresh;  // (assigned member by member: aggregate init would leave the later maps unnamed)
  fresh.metrics = RenderMetrics(core);
  fresh.jobs = RenderJobs(core);
  fresh.nodes = RenderNodes(core);
  fresh.queue = RenderQueue(core);
  fresh.models = RenderModelsJson(core);
  fresh.model_details = RenderModelDetailsJson(core);
  RenderPipelines(core, &fresh);
  fresh.schedules = RenderSchedules(core, &fresh.schedule_details);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->snapshot = std::move(fresh);
}
std::string HttpServer::RenderMetrics(const Coordinator& core) {
  return RenderCoordinatorMetrics(core);  // coordinator/metrics.h
}

std::string HttpServer::RenderJobs(const Coordinator& core) {
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& r : core.ActiveJobs()) {
    nlohmann::json placed = nlohmann::json::array();
    for (const auto& n : r.placement().nodes()) placed.push_back(n.node_id());
    jobs.push_back({{"job_id", r.job_id()},
                    {"name", r.name()},
                    {"state", protocol::StateName(r.state())},
                    {"attempt", r.attempt()},
                    {"epoch", r.epoch()},
                    {"priority", r.priority()},
                    {"world_size", r.resources().world_size()},
                    {"nodes", placed},
                    {"submitted_at_ms", r.submitted_at_ms()}});
  }
  return nlohmann::json{{"jobs", jobs}}.dump();
}

std::string HttpServer::RenderNodes(const Coordinator& core) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& n : core.Nodes()) {
    nodes.push_back({{"node_id", n.node_id()},
                     {"state", protocol::StateName(n.state())},
                     {"slots", n.inventory().slots()},
                     {"address", n.inventory().address()},
                     {"last_heartbeat_ms", n.last_heartbeat_ms()}});
  }
  return nlohmann::json{{"nodes", nodes}}.dump();
}

std::string HttpServer::RenderQueue(const Coordinator& core) {
  Principal everyone;  // the endpoint is a cluster admin's (ClusterAdminTokenAuthenticator)
  everyone.cluster_admin = true;
  auto queue = core.Queue(everyone, "");
  if (!queue.ok()) return nlohmann::json{{"error", queue.status().message()}}.dump();
  std::map<std::string, double> usage;
  for (const auto& u : queue->usage()) usage[u.team()] = u.decayed_slot_seconds();
  nlohmann::json teams = nlohmann::json::array();
  for (const auto& t : queue->teams()) {
    nlohmann::json quotas = nlohmann::json::array();
    for (const auto& q : t.quotas()) {
      quotas.push_back({{"label", q.label()}, {"guaranteed", q.guaranteed()}, {"max", q.max()}});
    }
    auto held = queue->slots_held().find(t.name());
    teams.push_back({{"name", t.name()},
                     {"weight", t.weight() == 0 ? 1.0 : t.weight()},
                     {"quotas", quotas},
                     {"usage_slot_seconds", usage[t.name()]},
                     {"slots_held", held == queue->slots_held().end() ? 0u : held->second}});
  }
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& r : queue->jobs()) {
    jobs.push_back({{"job_id", r.job_id()},
                    {"name", r.name()},
                    {"team", JobTeam(r)},
                    {"state", protocol::StateName(r.state())},
                    {"priority", r.priority()},
                    {"queue_position", r.queue_position()},
                    {"wait_reason", r.wait_reason()},
                    {"estimated_start_ms", r.estimated_start_ms()},
                    {"nodes", r.resources().nodes()},
                    {"gpus_per_node", r.resources().gpus_per_node()},
                    {"submit_seq", r.submit_seq()},
                    {"submitted_at_ms", r.submitted_at_ms()},
                    {"preemptions", r.preemptions()},
                    {"preempt_reason", r.preempt_reason()}});
  }
  return nlohmann::json{{"teams", teams}, {"jobs", jobs}}.dump();
}

}  // namespace anneal::coordinator
