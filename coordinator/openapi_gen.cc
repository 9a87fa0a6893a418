// anneal-openapi-gen: prints the OpenAPI 3 document of the REST API (coordinator/openapi.json) on stdout, made
// from the routes (coordinator/rest_api.h: RestRoutes) and the request and reply messages of
// protocol/anneal.proto, as proto3 JSON writes them (protocol/json.h). The document is committed; the test
// coordinator.openapi_current fails when it differs from this program's output (regenerate with
// `build/bin/anneal-openapi-gen > coordinator/openapi.json`).
#include <google/protobuf/descriptor.h>

#include <cctype>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "coordinator/rest_api.h"
#include "protocol/version.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using Json = nlohmann::ordered_json;

std::map<std::string, const Descriptor*> g_pending;  // schemas still to write
std::set<std::string> g_written;

Json Ref(const Descriptor* d) {
  if (!g_written.count(d->name())) g_pending.emplace(d->name(), d);
  return Json{{"$ref", "#/components/schemas/" + d->name()}};
}

// The JSON schema of one field's value (not repeated): proto3 JSON's mapping.
Json ValueSchema(const FieldDescriptor* f) {
  switch (f->type()) {
    case FieldDescriptor::TYPE_INT64:
    case FieldDescriptor::TYPE_SINT64:
    case FieldDescriptor::TYPE_SFIXED64:
      return Json{{"type", "string"}, {"pattern", "^-?[0-9]+$"}, {"description", "int64, as a decimal string"}};
    case FieldDescriptor::TYPE_UINT64:
    case FieldDescriptor::TYPE_FIXED64:
      return Json{{"type", "string"}, {"pattern", "^[0-9]+$"}, {"description", "uint64, as a decimal string"}};
    case FieldDescriptor::TYPE_INT32:
    case FieldDescriptor::TYPE_SINT32:
    case FieldDescriptor::TYPE_SFIXED32:
      return Json{{"type", "integer"}, {"format", "int32"}};
    case FieldDescriptor::TYPE_UINT32:
    case FieldDescriptor::TYPE_FIXED32:
      return Json{{"type", "integer"}, {"format", "int64"}, {"minimum", 0}, {"maximum", 4294967295LL}};
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FLOAT:
      return Json{{"type", "number"}};
    case FieldDescriptor::TYPE_BOOL:
      return Json{{"type", "boolean"}};
    case FieldDescriptor::TYPE_STRING:
      return Json{{"type", "string"}};
    case FieldDescriptor::TYPE_BYTES:
      return Json{{"type", "string"}, {"description", "bytes, base64"}};
    case FieldDescriptor::TYPE_ENUM: {
      Json names = Json::array();
      for (int i = 0; i < f->enum_type()->value_count(); ++i) names.push_back(f->enum_type()->value(i)->name());
      return Json{{"type", "string"}, {"enum", names}};
    }
    default:
      return Ref(f->message_type());
  }
}

Json FieldSchema(const FieldDescriptor* f) {
  if (f->is_map()) {
    return Json{{"type", "object"}, {"additionalProperties", ValueSchema(f->message_type()->map_value())}};
  }
  if (f->is_repeated()) return Json{{"type", "array"}, {"items", ValueSchema(f)}};
  return ValueSchema(f);
}

Json MessageSchema(const Descriptor* d) {
  Json properties = Json::object();
  for (int i = 0; i < d->field_count(); ++i) properties[d->field(i)->name()] = FieldSchema(d->field(i));
  return Json{{"type", "object"}, {"properties", properties}};
}

// The ClientReply field that answers a ClientRequest field (mostly the same name).
const Descriptor* ReplyType(const std::string& request_field) {
  static const std::map<std::string, std::string> kOther = {
      {"revoke_token", "identity_done"}, {"create_user", "identity_done"}, {"delete_user", "identity_done"},
      {"create_team", "identity_done"},  {"delete_team", "identity_done"}, {"set_role", "identity_done"},
      {"create_schedule", "schedule"},   {"get_schedule", "schedule"},     {"pause_schedule", "schedule"},
      {"resume_schedule", "schedule"},   {"delete_schedule", "schedule"},  {"trigger_schedule", "schedule"}};
  auto it = kOther.find(request_field);
  const std::string name = it == kOther.end() ? request_field : it->second;
  const FieldDescriptor* f = anneal::pb::ClientReply::descriptor()->FindFieldByName(name);
  return f == nullptr ? nullptr : f->message_type();
}

std::vector<std::string> PathParams(const std::string& pattern) {
  std::vector<std::string> names;
  for (size_t open = pattern.find('{'); open != std::string::npos; open = pattern.find('{', open + 1)) {
    names.push_back(pattern.substr(open + 1, pattern.find('}', open) - open - 1));
  }
  return names;
}

Json Operation(const anneal::coordinator::RestRoute& route) {
  const std::string field = route.body_field;
  Json op{{"operationId", field.empty() ? "stream_job" : field}, {"summary", route.summary}};
  Json parameters = Json::array();
  const auto names = PathParams(route.pattern);
  for (const auto& name : names) {
    parameters.push_back({{"name", name}, {"in", "path"}, {"required", true}, {"schema", {{"type", "string"}}}});
  }
  const Json error{{"description", "an error: {\"error\": {\"code\", \"message\"}}"},
                   {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/ErrorReply"}}}}}}}};
  if (field.empty()) {
    parameters.push_back({{"name", "Last-Event-ID"},
                          {"in", "header"},
                          {"required", false},
                          {"schema", {{"type", "string"}, {"pattern", "^[0-9]+:[0-9]+$"}}}});
    op["parameters"] = parameters;
    op["responses"] = {{"200",
                        {{"description", "server-sent events: job, event, metric, end, error; : heartbeat comments"},
                         {"content", {{"text/event-stream", {{"schema", {{"type", "string"}}}}}}}}},
                       {"default", error}};
    return op;
  }
  const Descriptor* request = anneal::pb::ClientRequest::descriptor()->FindFieldByName(field)->message_type();
  const std::string method = route.method;
  if (method == "GET" || method == "DELETE") {
    for (int i = 0; i < request->field_count(); ++i) {
      const FieldDescriptor* f = request->field(i);
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) continue;
      bool in_path = false;
      for (const auto& name : names) in_path |= name == f->name();
      if (in_path) continue;
      Json p{{"name", f->name()}, {"in", "query"}, {"required", false}, {"schema", FieldSchema(f)}};
      if (field == "watch" && f->name() == "timeout_ms") p["schema"]["maximum"] = anneal::coordinator::kMaxRestWatchMs;
      if (f->is_repeated()) p["explode"] = true;
      parameters.push_back(p);
    }
  } else {
    Json content{{"application/json", {{"schema", Ref(request)}}}};
    if (route.yaml_field != nullptr) content["text/yaml"] = {{"schema", {{"type", "string"}}}};
    op["requestBody"] = {{"required", false}, {"content", content}};
  }
  if (!parameters.empty()) op["parameters"] = parameters;
  Json reply = Ref(ReplyType(field));
  if (field == "get_logs") {  // data as text, not base64
    reply = Json{{"type", "object"},
                 {"properties",
                  {{"data", {{"type", "string"}}},
                   {"next_offset", {{"type", "string"}, {"pattern", "^[0-9]+$"}}},
                   {"eof", {{"type", "boolean"}}}}}};
  }
  op["responses"] = {
      {std::to_string(route.success_status),
       {{"description", "the reply (proto3 JSON)"}, {"content", {{"application/json", {{"schema", reply}}}}}}},
      {"default", error}};
  return op;
}

}  // namespace

int main() {
  Json paths = Json::object();
  for (const auto& route : anneal::coordinator::RestRoutes()) {
    std::string method = route.method;
    for (auto& c : method) c = static_cast<char>(std::tolower(c));
    paths[route.pattern][method] = Operation(route);
  }
  Json schemas = Json::object();
  schemas["ErrorReply"] = {{"type", "object"},
                           {"required", {"error"}},
                           {"properties",
                            {{"error",
                              {{"type", "object"},
                               {"required", {"code", "message"}},
                               {"properties", {{"code", {{"type", "string"}}}, {"message", {{"type", "string"}}}}}}}}}};
  while (!g_pending.empty()) {
    auto [name, d] = *g_pending.begin();
    g_pending.erase(g_pending.begin());
    g_written.insert(name);
    schemas[name] = MessageSchema(d);
  }
  Json sorted_schemas = Json::object();
  std::map<std::string, Json> by_name;
  for (const auto& item : schemas.items()) by_name[item.key()] = item.value();
  for (auto& [name, schema] : by_name) sorted_schemas[name] = schema;
  Json doc{
      {"openapi", "3.0.3"},
      {"info",
       {{"title", "Anneal coordinator REST API"},
        {"version", std::to_string(anneal::protocol::kProtocolVersion)},
        {"description",
         "Every operation of the anneal CLI over HTTP (docs/rest-api.md). Bodies are proto3 JSON of "
         "protocol/anneal.proto: field names as in the .proto, 64-bit integers as decimal strings, enums by "
         "name. Errors: {\"error\": {\"code\", \"message\"}}."}}},
      {"security", Json::array({{{"bearer", Json::array()}}})},
      {"paths", paths},
      {"components",
       {{"securitySchemes", {{"bearer", {{"type", "http"}, {"scheme", "bearer"}}}}}, {"schemas", sorted_schemas}}}};
  std::cout << doc.dump(1) << "\n";
  return 0;
}
