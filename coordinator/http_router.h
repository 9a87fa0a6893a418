// The coordinator's HTTP API as a pure function: one request (method, target, Authorization header) and the
// latest published snapshot in, one response out. HttpServer (coordinator/http.h) parses the bytes and calls
// RouteHttpRequest; unit tests and fuzz targets call it without sockets.
//
// Routes (GET only):
//   /metrics    Prometheus text                    public when `public_metrics`, else like the others
//   /api/jobs   JSON of the active jobs
//   /api/nodes  JSON of the nodes
//   /api/queue  JSON of the pending queue per team (HttpServer::RenderQueue)
//   /api/models, /api/models/<team>/<name>   the model registry (coordinator/model_registry_json.h); an
//               unknown model is 404 naming it
//   /api/pipelines       JSON of the newest pipeline runs (HttpServer::RenderPipelines)
//   /api/pipelines/<id>  JSON of one of them, its steps in full (404 for a run not among them)
//   /api/schedules, /api/schedules/<team>/<name>   JSON of the schedules (coordinator/schedule_http.h)
// Every route needs `Authorization: Bearer <token>` accepted by the authenticator, except a public /metrics.
// Outcomes: 200 with the body; 401 (with WWW-Authenticate: Bearer) when the header is missing, not a Bearer
// token, or refused (the body says which, with the authenticator's message); 405 for another method;
// 404 for another path. The query string is ignored.
//
// Thread-safety: RouteHttpRequest is pure; the authenticator must be thread-safe (called on the HTTP thread).
//
// Example:
//   HttpRouteOptions options{.public_metrics = false, .authenticate = ClusterAdminTokenAuthenticator(store, &clock)};
//   HttpResponse r = RouteHttpRequest({.method = "GET", .target = "/api/jobs",
//                                      .authorization = "Bearer s3cret"}, snapshot, options);
//   // r.status == 200, r.body == snapshot.jobs
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/http_server.h"
#include "common/status.h"
#include "coordinator/clock.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

using HttpRequest = anneal::HttpRequest;  // common/http_server.h
using HttpResponse = anneal::HttpResponse;

// What the HTTP thread serves: bodies rendered by the event loop (HttpServer::Publish).
struct HttpSnapshot {
  std::string metrics = "# no snapshot yet\n";
  std::string jobs = "{\"jobs\":[]}";
  std::string nodes = "{\"nodes\":[]}";
  std::string queue = "{\"teams\":[],\"jobs\":[]}";
  std::string models = "{\"models\":[]}";
  std::map<std::string, std::string> model_details{};  // "team/name" -> its /api/models/team/name body
  std::string pipelines = "{\"pipelines\":[]}";
  std::map<std::string, std::string> pipeline_runs{};  // run id -> its JSON
  std::string schedules = "{\"schedules\":[]}";
  std::map<std::string, std::string> schedule_details{};  // "<team>/<name>" -> body
};

// OK when the bearer token may read the API; an error whose message the 401 body carries otherwise.
using HttpAuthenticator = std::function<Status(std::string_view bearer_token)>;

struct HttpRouteOptions {
  bool public_metrics = false;
  HttpAuthenticator authenticate;  // empty: every authenticated route is refused
};

HttpResponse RouteHttpRequest(const HttpRequest& request, const HttpSnapshot& snapshot,
                              const HttpRouteOptions& options);

// The production authenticator: an API token of a cluster admin (coordinator/identity.h), read from the
// store (thread-safe; the HTTP thread calls it). The endpoints serve the whole cluster's state, so a team role
// is not enough (per-team views come with the web console).
HttpAuthenticator ClusterAdminTokenAuthenticator(const storage::StateStore* store, const Clock* clock);

}  // namespace anneal::coordinator
