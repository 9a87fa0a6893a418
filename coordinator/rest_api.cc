#include "coordinator/rest_api.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "protocol/framing.h"
#include "protocol/json.h"

namespace anneal::coordinator {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using nlohmann::json;

std::string JsonText(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse JsonResponse(int status, const json& value) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = JsonText(value);
  return r;
}

std::vector<std::string_view> Split(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 1;  // after the leading '/'
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

std::string PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(text[i + 1]) && std::isxdigit(text[i + 2])) {
      out.push_back(static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (text[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// Matches `path` against a pattern; fills `params` (field path -> value) when it does.
bool Match(std::string_view pattern, std::string_view path, std::vector<std::pair<std::string, std::string>>* params) {
  const auto want = Split(pattern);
  const auto got = Split(path);
  if (want.size() != got.size()) return false;
  std::vector<std::pair<std::string, std::string>> found;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i].size() > 2 && want[i].front() == '{') {
      if (got[i].empty()) return false;
      found.emplace_back(std::string(want[i].substr(1, want[i].size() - 2)), PercentDecode(got[i], false));
    } else if (want[i] != got[i]) {
      return false;
    }
  }
  *params = std::move(found);
  return true;
}

// Sets a dotted field path ("schedule.team") in a JSON object.
void SetPath(json* object, std::string_view path, json value) {
  const auto dot = path.find('.');
  if (dot == std::string_view::npos) {
    (*object)[std::string(path)] = std::move(value);
    return;
  }
  json& inner = (*object)[std::string(path.substr(0, dot))];
  if (!inner.is_object()) inner = json::object();
  SetPath(&inner, path.substr(dot + 1), std::move(value));
}

// The field a path parameter fills: a field of the message, or of its one message field that has it
// ({team}/{name} of a schedule route are schedule.team and schedule.name).
std::string FieldPath(const Descriptor& message, const std::string& name) {
  if (message.FindFieldByName(name) != nullptr) return name;
  for (int i = 0; i < message.field_count(); ++i) {
    const Descriptor* inner = message.field(i)->message_type();
    if (inner != nullptr && inner->FindFieldByName(name) != nullptr) return message.field(i)->name() + "." + name;
  }
  return name;
}

// A query value as the JSON the field's type wants (proto3 JSON accepts integers as strings).
StatusOr<json> QueryValue(const FieldDescriptor& field, const std::string& key, const std::string& value) {
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      if (value == "true" || value == "1" || value.empty()) return json(true);
      if (value == "false" || value == "0") return json(false);
      return InvalidArgumentError(fmt::format("query parameter {}={}: expected true or false", key, value));
    case FieldDescriptor::CPPTYPE_ENUM: {
      // By name, case-insensitive, the enum's prefix optional: state=running is JOB_RUNNING.
      std::string upper = value;
      std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
      const auto* type = field.enum_type();
      if (type->FindValueByName(upper) != nullptr) return json(upper);
      for (int i = 0; i < type->value_count(); ++i) {
        const std::string& name = type->value(i)->name();
        if (name.size() > upper.size() && name.ends_with("_" + upper)) return json(name);
      }
      return InvalidArgumentError(fmt::format("query parameter {}={}: not a {} name", key, value, type->name()));
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return InvalidArgumentError(fmt::format("query parameter {}: a message field; send it in a JSON body", key));
    default:
      return json(value);
  }
}

Status AddQuery(std::string_view query, const Descriptor& message, json* fields) {
  size_t start = 0;
  while (start < query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    const std::string_view pair = query.substr(start, end - start);
    start = end + 1;
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    std::string key = PercentDecode(pair.substr(0, eq), true);
    const std::string value = eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1), true);
    if (key == "state" && message.FindFieldByName("states") != nullptr) key = "states";
    const FieldDescriptor* field = message.FindFieldByName(key);
    if (field == nullptr) {
      std::vector<std::string> names;
      for (int i = 0; i < message.field_count(); ++i) names.push_back(message.field(i)->name());
      return InvalidArgumentError(fmt::format("unknown query parameter '{}' (this route takes: {})", key.substr(0, 64),
                                              names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "))));
    }
    ASSIGN_OR_RETURN(json v, QueryValue(*field, key, value));
    if (field->is_repeated()) {
      (*fields)[key].push_back(std::move(v));
    } else {
      (*fields)[key] = std::move(v);
    }
  }
  return Status::Ok();
}

bool IsYaml(std::string_view content_type) {
  const std::string_view type = content_type.substr(0, content_type.find(';'));
  return type == "text/yaml" || type == "application/x-yaml" || type == "application/yaml" || type == "text/plain";
}

// The request message's JSON: the body (JSON object, or the YAML text), then query, then path parameters.
StatusOr<json> RequestFields(const HttpRequest& request, const RestRoute& route, const Descriptor& message,
                             const std::vector<std::pair<std::string, std::string>>& params) {
  json fields = json::object();
  if (request.method != "GET" && request.method != "DELETE" && !request.body.empty()) {
    if (route.yaml_field != nullptr && IsYaml(request.content_type)) {
      fields[route.yaml_field] = request.body;
    } else {
      // Nesting is bounded before anything recursive (the dump below) sees the document: a megabyte of '['
      // would otherwise overflow the HTTP thread's stack, and the token is not checked yet at this point.
      bool too_deep = false;
      const json::parser_callback_t depth_guard = [&too_deep](int depth, json::parse_event_t, json&) {
        if (depth > kMaxRestJsonDepth) too_deep = true;
        return !too_deep;
      };
      fields = json::parse(request.body, depth_guard, /*allow_exceptions=*/false);
      if (too_deep) {
        return InvalidArgumentError(
            fmt::format("the request body nests deeper than {} levels (objects and arrays)", kMaxRestJsonDepth));
      }
      if (fields.is_discarded() || !fields.is_object()) {
        return InvalidArgumentError(
            fmt::format("the request body is not a JSON object{}",
                        route.yaml_field != nullptr ? " (or send the YAML with Content-Type: text/yaml)" : ""));
      }
    }
  }
  const auto question = request.target.find('?');
  if (question != std::string::npos) {
    RETURN_IF_ERROR(AddQuery(std::string_view(request.target).substr(question + 1), message, &fields));
  }
  for (const auto& [name, value] : params) SetPath(&fields, FieldPath(message, name), value);
  return fields;
}

}  // namespace

const std::vector<RestRoute>& RestRoutes() {
  static const std::vector<RestRoute> routes = {
      {"GET", "/api/v1/whoami", "whoami", 200, nullptr, "Who the bearer token is: user, teams and roles"},
      {"GET", "/api/v1/jobs", "list_jobs", 200, nullptr, "List jobs (filters: state, team; paging: limit, page_token)"},
      {"POST", "/api/v1/jobs", "submit", 201, "spec_yaml", "Submit a job (YAML spec body, or JSON SubmitJobRequest)"},
      {"GET", "/api/v1/jobs/{job_id}", "get_job", 200, nullptr, "A job: record, events, latest metrics, checkpoints"},
      {"POST", "/api/v1/jobs/{job_id}/cancel", "cancel", 200, nullptr, "Cancel a job"},
      {"GET", "/api/v1/jobs/{job_id}/checkpoints", "list_checkpoints", 200, nullptr, "A job's checkpoints"},
      {"GET", "/api/v1/jobs/{job_id}/logs", "get_logs", 200, nullptr, "A rank's log from an offset (data as text)"},
      {"GET", "/api/v1/jobs/{job_id}/outputs", "fetch_outputs", 200, nullptr,
       "Where a job's outputs are, with a ticket to copy them from that node (anneal fetch)"},
      {"GET", "/api/v1/jobs/{job_id}/watch", "watch", 200, nullptr, "Long poll: new events and metrics of a job"},
      {"GET", "/api/v1/jobs/{job_id}/stream", "", 200, nullptr, "Server-sent events: job, event and metric"},
      {"GET", "/api/v1/nodes", "list_nodes", 200, nullptr, "List nodes"},
      {"POST", "/api/v1/nodes/{node_id}/drain", "drain", 200, nullptr, "Drain (or undrain, evict) a node"},
      {"DELETE", "/api/v1/nodes/{node_id}", "remove_node", 200, nullptr, "Remove a node (force: even with tasks)"},
      {"GET", "/api/v1/queue", "queue", 200, nullptr, "The pending queue in fair-share order, with reasons"},
      {"GET", "/api/v1/teams", "list_teams", 200, nullptr, "List teams and members"},
      {"POST", "/api/v1/teams", "create_team", 201, nullptr, "Create a team"},
      {"DELETE", "/api/v1/teams/{name}", "delete_team", 200, nullptr, "Delete a team"},
      {"POST", "/api/v1/teams/{team}/quota", "set_team_quota", 200, nullptr, "Set a team's weight and quotas"},
      {"POST", "/api/v1/teams/{team}/members", "set_role", 200, nullptr, "Set (or remove) a member's role"},
      {"GET", "/api/v1/users", "list_users", 200, nullptr, "List users"},
      {"POST", "/api/v1/users", "create_user", 201, nullptr, "Create a user"},
      {"DELETE", "/api/v1/users/{name}", "delete_user", 200, nullptr, "Delete a user (revokes its tokens)"},
      {"GET", "/api/v1/tokens", "list_tokens", 200, nullptr, "List API tokens"},
      {"POST", "/api/v1/tokens", "create_token", 201, nullptr, "Create an API token (the secret is shown once)"},
      {"DELETE", "/api/v1/tokens/{token_id}", "revoke_token", 200, nullptr, "Revoke an API token"},
      {"GET", "/api/v1/audit", "list_audit", 200, nullptr, "The audit log"},
      {"GET", "/api/v1/join-tokens", "list_join_tokens", 200, nullptr, "List agent join tokens"},
      {"POST", "/api/v1/join-tokens", "create_join_token", 201, nullptr, "Create an agent join token"},
      {"DELETE", "/api/v1/join-tokens/{id}", "revoke_join_token", 200, nullptr, "Revoke an agent join token"},
      {"GET", "/api/v1/pipelines", "list_pipelines", 200, nullptr, "List pipeline runs"},
      {"POST", "/api/v1/pipelines", "submit_pipeline", 201, "yaml", "Submit a pipeline (YAML body, or JSON)"},
      {"GET", "/api/v1/pipelines/{pipeline_id}", "get_pipeline", 200, nullptr, "A pipeline run"},
      {"POST", "/api/v1/pipelines/{pipeline_id}/cancel", "cancel_pipeline", 200, nullptr, "Cancel a pipeline run"},
      {"POST", "/api/v1/pipelines/{pipeline_id}/retry", "retry_pipeline", 200, nullptr,
       "Retry a pipeline's failed steps"},
      {"GET", "/api/v1/schedules", "list_schedules", 200, nullptr, "List schedules"},
      {"POST", "/api/v1/schedules", "create_schedule", 201, nullptr, "Create a schedule"},
      {"GET", "/api/v1/schedules/{team}/{name}", "get_schedule", 200, nullptr, "A schedule"},
      {"POST", "/api/v1/schedules/{team}/{name}/pause", "pause_schedule", 200, nullptr, "Pause a schedule"},
      {"POST", "/api/v1/schedules/{team}/{name}/resume", "resume_schedule", 200, nullptr, "Resume a schedule"},
      {"POST", "/api/v1/schedules/{team}/{name}/trigger", "trigger_schedule", 200, nullptr,
       "Fire a schedule now, by hand"},
      {"DELETE", "/api/v1/schedules/{team}/{name}", "delete_schedule", 200, nullptr, "Delete a schedule"},
      {"GET", "/api/v1/models", "list_models", 200, nullptr, "List registered models"},
      {"GET", "/api/v1/models/{team}/{name}", "get_model", 200, nullptr, "A model and its versions"},
      {"POST", "/api/v1/models/{team}/{name}/versions", "register_model", 201, nullptr,
       "Register a job's output as a new version"},
      {"POST", "/api/v1/models/{team}/{name}/promote", "promote_model", 200, nullptr, "Promote a version"},
      {"POST", "/api/v1/models/{team}/{name}/archive", "archive_model", 200, nullptr, "Archive a version"},
  };
  return routes;
}

StatusOr<std::string> RestBearerToken(std::string_view header) {
  if (header.empty()) {
    return UnauthenticatedError("no Authorization header; send 'Authorization: Bearer <API token>'");
  }
  // The scheme is case-insensitive (RFC 9110); the token is what follows the spaces.
  constexpr std::string_view kScheme = "bearer ";
  const bool bearer = header.size() > kScheme.size() &&
                      std::equal(kScheme.begin(), kScheme.end(), header.begin(),
                                 [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); });
  std::string_view token = bearer ? header.substr(kScheme.size()) : std::string_view();
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return UnauthenticatedError("the Authorization header is not 'Bearer <API token>'");
  return std::string(token);
}

std::optional<HttpResponse> BuildRestCall(const HttpRequest& request, RestCall* call) {
  const std::string_view path = HttpPath(request.target);
  std::vector<std::string> allowed;
  for (const RestRoute& route : RestRoutes()) {
    std::vector<std::pair<std::string, std::string>> params;
    if (!Match(route.pattern, path, &params)) continue;
    if (request.method != route.method) {
      allowed.push_back(route.method);
      continue;
    }
    auto token = RestBearerToken(request.authorization);
    if (!token.ok()) return RestErrorResponse(token.status());
    call->route = &route;
    call->request.Clear();
    call->request.set_token(*token);
    call->path_params = params;
    if (*route.body_field == '\0') return std::nullopt;  // the stream builds its own requests
    const FieldDescriptor* field = pb::ClientRequest::descriptor()->FindFieldByName(route.body_field);
    google::protobuf::Message* body = call->request.GetReflection()->MutableMessage(&call->request, field);
    auto fields = RequestFields(request, route, *body->GetDescriptor(), params);
    if (!fields.ok()) return RestErrorResponse(fields.status());
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    if (auto st = google::protobuf::util::JsonStringToMessage(JsonText(*fields), body, options); !st.ok()) {
      return RestErrorResponse(InvalidArgumentError(
          fmt::format("the request does not fit {}: {}", body->GetDescriptor()->name(), std::string(st.message()))));
    }
    if (call->request.has_watch()) {
      if (call->request.watch().timeout_ms() > kMaxRestWatchMs) {
        return RestErrorResponse(InvalidArgumentError(
            fmt::format("timeout_ms {} is above the REST API's limit of {} ms (poll again, or use /stream)",
                        call->request.watch().timeout_ms(), kMaxRestWatchMs)));
      }
      call->extra_wait = std::chrono::milliseconds(call->request.watch().timeout_ms());
    }
    return std::nullopt;
  }
  if (!allowed.empty()) {
    HttpResponse r = RestErrorResponse(
        InvalidArgumentError(fmt::format("{} is not served on {} (allowed: {})", request.method.substr(0, 16),
                                         std::string(path.substr(0, 200)), fmt::join(allowed, ", "))));
    r.status = 405;
    r.headers.emplace_back("Allow", fmt::format("{}", fmt::join(allowed, ", ")));
    return r;
  }
  return RestErrorResponse(NotFoundError(fmt::format("no route {} {} (GET /api/openapi.json lists them)",
                                                     request.method.substr(0, 16), std::string(path.substr(0, 200)))));
}

int RestHttpStatus(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kCancelled:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

HttpResponse RestErrorResponse(const Status& status) {
  const auto code = static_cast<pb::ErrorCode>(static_cast<int>(status.code()));
  const std::string name = pb::ErrorCode_IsValid(code) ? pb::ErrorCode_Name(code) : "INTERNAL";
  HttpResponse r =
      JsonResponse(RestHttpStatus(status.code()), json{{"error", {{"code", name}, {"message", status.message()}}}});
  if (r.status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"anneal\"");
  return r;
}

std::string RestReplyJson(const pb::ClientReply& reply) {
  const auto* oneof = pb::ClientReply::descriptor()->FindOneofByName("body");
  const FieldDescriptor* set = reply.GetReflection()->GetOneofFieldDescriptor(reply, oneof);
  if (set == nullptr) return "{}";
  json body = protocol::MessageToJson(reply.GetReflection()->GetMessage(reply, set));
  if (reply.has_get_logs()) body["data"] = reply.get_logs().data();  // text, not proto3 JSON's base64
  return JsonText(body);
}

HttpResponse RestReplyResponse(const StatusOr<pb::ClientReply>& reply, int success_status) {
  if (!reply.ok()) return RestErrorResponse(reply.status());
  if (reply->error().code() != pb::OK) return RestErrorResponse(protocol::FromProto(reply->error()));
  HttpResponse r;
  r.status = success_status;
  r.content_type = "application/json";
  r.body = RestReplyJson(*reply);
  return r;
}

}  // namespace anneal::coordinator
