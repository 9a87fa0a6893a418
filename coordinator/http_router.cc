#include "coordinator/http_router.h"

#include <fmt/format.h>

#include "coordinator/authz.h"
#include "coordinator/web_console.h"

namespace anneal::coordinator {
namespace {

HttpResponse Unauthorized(std::string why) {
  HttpResponse r;
  r.status = 401;
  r.body = "401 unauthorized: " + std::move(why) + "\n";
  r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"anneal\"");
  return r;
}

// The bearer token of an Authorization header value, or the reason there is none.
StatusOr<std::string_view> BearerToken(std::string_view header) {
  if (header.empty()) {
    return UnauthenticatedError(
        "no Authorization header; send 'Authorization: Bearer <API token>' (every endpoint but a public /metrics "
        "needs one)");
  }
  constexpr std::string_view kScheme = "Bearer ";
  if (header.size() <= kScheme.size() || header.substr(0, kScheme.size()) != kScheme) {
    return UnauthenticatedError("the Authorization header is not 'Bearer <API token>'");
  }
  return header.substr(kScheme.size());
}

}  // namespace

HttpResponse RouteHttpRequest(const HttpRequest& request, const HttpSnapshot& snapshot,
                              const HttpRouteOptions& options) {
  if (auto page = ServeWebConsole(request)) return *page;  // the web console's static files (no token)
  const std::string_view path = std::string_view(request.target).substr(0, request.target.find('?'));
  const bool public_route = options.public_metrics && path == "/metrics";
  if (!public_route) {
    auto bearer = BearerToken(request.authorization);
    if (!bearer.ok()) return Unauthorized(bearer.status().message());
    if (!options.authenticate) return Unauthorized("this coordinator has no HTTP authenticator configured");
    if (Status st = options.authenticate(*bearer); !st.ok()) return Unauthorized(st.message());
  }
  HttpResponse r;
  if (request.method != "GET") {
    r.status = 405;
    r.body = fmt::format("405 method not allowed: only GET is served, not {}\n", request.method.substr(0, 16));
  } else if (path == "/metrics") {
    r.content_type = "text/plain; version=0.0.4";
    r.body = snapshot.metrics;
  } else if (path == "/api/jobs") {
    r.content_type = "application/json";
    r.body = snapshot.jobs;
  } else if (path == "/api/nodes") {
    r.content_type = "application/json";
    r.body = snapshot.nodes;
  } else if (path == "/api/queue") {
    r.content_type = "application/json";
    r.body = snapshot.queue;
  } else if (path == "/api/models") {
    r.content_type = "application/json";
    r.body = snapshot.models;
  } else if (path.rfind("/api/models/", 0) == 0) {
    const std::string name(path.substr(std::string_view("/api/models/").size()));
    if (auto it = snapshot.model_details.find(name); it != snapshot.model_details.end()) {
      r.content_type = "application/json";
      r.body = it->second;
    } else {
      r.status = 404;
      r.body = fmt::format("404 not found: no model '{}' (GET /api/models lists them as <team>/<name>)\n",
                           name.substr(0, 200));
    }
  } else if (path == "/api/pipelines") {
    r.content_type = "application/json";
    r.body = snapshot.pipelines;
  } else if (path.rfind("/api/pipelines/", 0) == 0 &&
             snapshot.pipeline_runs.count(std::string(path.substr(sizeof("/api/pipelines/") - 1)))) {
    r.content_type = "application/json";
    r.body = snapshot.pipeline_runs.at(std::string(path.substr(sizeof("/api/pipelines/") - 1)));
  } else if (path == "/api/schedules") {
    r.content_type = "application/json";
    r.body = snapshot.schedules;
  } else if (path.starts_with("/api/schedules/")) {
    auto it = snapshot.schedule_details.find(std::string(path.substr(std::string_view("/api/schedules/").size())));
    if (it == snapshot.schedule_details.end()) {
      r.status = 404;
      r.body = fmt::format("404 not found: no schedule {} (GET /api/schedules lists them)\n",
                           path.substr(std::string_view("/api/schedules/").size(), 256));
    } else {
      r.content_type = "application/json";
      r.body = it->second;
    }
  } else {
    r.status = 404;
    r.body =
        "404 not found: try /metrics, /api/jobs, /api/nodes, /api/queue, /api/pipelines, /api/schedules or "
        "/api/models\n";
  }
  return r;
}

HttpAuthenticator ClusterAdminTokenAuthenticator(const storage::StateStore* store, const Clock* clock) {
  return [store, clock](std::string_view token) -> Status {
    ASSIGN_OR_RETURN(Principal who, AuthenticateInStore(*store, token, clock->NowMs()));
    return RequireClusterAdmin(who, "read the cluster's state over HTTP");
  };
}

}  // namespace anneal::coordinator
