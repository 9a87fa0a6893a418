// The REST API (/api/v1) as pure functions: an HTTP request in, the pb::ClientRequest the CLI would send out;
// a pb::ClientReply in, the HTTP response out. The HTTP thread (coordinator/http.h) sends the request through
// the RestGateway (coordinator/rest_gateway.h), so the roles are exactly the ZeroMQ API's.
//
// Routes (RestRoutes() lists them; docs/rest-api.md and coordinator/openapi.json describe each):
//   GET  /api/v1/whoami                          whoami
//   GET  /api/v1/jobs?state=RUNNING&team=T&limit=50&page_token=...   list_jobs
//   POST /api/v1/jobs   (YAML spec as text/yaml | application/x-yaml, or JSON SubmitJobRequest)  submit -> 201
//   GET  /api/v1/jobs/{job_id}    POST /api/v1/jobs/{job_id}/cancel    GET /api/v1/jobs/{job_id}/checkpoints
//   GET  /api/v1/jobs/{job_id}/logs?rank=&offset=&max_bytes=     (data as text, next_offset, eof)
//   GET  /api/v1/jobs/{job_id}/watch?after_event_seq=&after_metric_step=&timeout_ms=   (long poll)
//   GET  /api/v1/jobs/{job_id}/stream   server-sent events (coordinator/rest_stream.h)
//   GET  /api/v1/nodes   POST /api/v1/nodes/{node_id}/drain {"undrain","evict"}   DELETE /api/v1/nodes/{node_id}
//   GET  /api/v1/queue?team=
//   teams, users, tokens, audit, join-tokens, pipelines, schedules, models: see RestRoutes().
// Inputs: the path's {fields}, the query string (each key a field of the request message; repeated fields
// repeat the key; `state` is an alias of list_jobs' `states`) and, for POST, a JSON body of the request message
// (proto3 JSON: field names as in protocol/anneal.proto, int64 as numbers or strings, enums by name).
// Outputs: the reply body as proto3 JSON (protocol/json.h: field names as in the .proto, int64/uint64 as
// strings, every primitive field present), except logs' `data`, given as text. Errors:
//   {"error": {"code": "NOT_FOUND", "message": "..."}} with the HTTP status of RestHttpStatus(code).
//
// Thread-safety: pure functions.
//
// Example:
//   RestCall call;
//   if (auto refused = BuildRestCall(request, &call)) return *refused;   // 400/404/405 with the JSON error
//   gateway.Call(call.request, call.extra_wait, [=](auto reply) { x->Respond(RestReplyResponse(reply, 200)); });
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/http_server.h"
#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::coordinator {

// The longest long poll of GET /api/v1/jobs/{id}/watch (timeout_ms above it is 400).
inline constexpr uint32_t kMaxRestWatchMs = 30000;
// A JSON request body nesting objects/arrays deeper than this is refused (400) before it is converted.
inline constexpr int kMaxRestJsonDepth = 64;

struct RestRoute {
  const char* method;      // GET, POST, DELETE
  const char* pattern;     // "/api/v1/jobs/{job_id}/cancel": {x} is a field path of the request message
  const char* body_field;  // the ClientRequest oneof field ("cancel"); "" for the SSE stream
  int success_status;      // 200, or 201 for creations
  const char* yaml_field;  // a field a text/yaml body fills ("spec_yaml"), or nullptr
  const char* summary;     // one line, for the OpenAPI document
};

const std::vector<RestRoute>& RestRoutes();

struct RestCall {
  const RestRoute* route = nullptr;
  pb::ClientRequest request;                                     // token set from the bearer token
  std::chrono::milliseconds extra_wait{0};                       // a long poll's own wait (watch timeout_ms)
  std::vector<std::pair<std::string, std::string>> path_params;  // {field} -> value, e.g. job_id -> j-12
};

// Fills `call` from the request; or returns the refusal: 401 (no or malformed bearer token), 404 (no such
// route), 405 (the path exists for other methods; Allow lists them), 400 (a query key or body field the request
// message has not, a value of the wrong type, malformed JSON), each a JSON error naming what was refused.
std::optional<HttpResponse> BuildRestCall(const HttpRequest& request, RestCall* call);

// The bearer token of an Authorization header value; UNAUTHENTICATED saying what is wrong otherwise.
StatusOr<std::string> RestBearerToken(std::string_view authorization);

// The HTTP status of an error code: 400 invalid argument, 401, 403, 404, 409 (already exists, failed
// precondition, cancelled), 429 resource exhausted, 503 unavailable, 504 deadline exceeded, 500 otherwise.
int RestHttpStatus(StatusCode code);
// {"error": {"code", "message"}} with RestHttpStatus (401 adds WWW-Authenticate: Bearer).
HttpResponse RestErrorResponse(const Status& status);
// The reply (or the gateway's error) as the HTTP response: success_status (the route's) with the reply's JSON, or
// the error.
HttpResponse RestReplyResponse(const StatusOr<pb::ClientReply>& reply, int success_status);
// The JSON of a reply's body (its set oneof field); logs' data as text. Public for the SSE stream.
std::string RestReplyJson(const pb::ClientReply& reply);

}  // namespace anneal::coordinator
