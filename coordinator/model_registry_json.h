// The model registry over HTTP (read-only): the JSON bodies of GET /api/models and /api/models/<team>/<name>,
// rendered on the event loop into the HttpSnapshot (coordinator/http_router.h) that the HTTP thread serves.
//
//   /api/models                {"models": [ModelRecord + "production": its production version or null]}
//   /api/models/<team>/<name>  {"model": ModelRecord, "versions": [ModelVersionRecord, oldest first]}
// Records are the protocol messages as JSON (proto field names, enums by name, every field present). The
// endpoint is a cluster admin's, like every route of the HTTP API, so every team's models are listed.
//
// Thread-safety: call on the event loop (reads the Coordinator). Ownership: returns values.
//
// Example:
//   snapshot.models = RenderModelsJson(core);
//   snapshot.model_details = RenderModelDetailsJson(core);   // "nlp/summarizer" -> its body
#pragma once

#include <map>
#include <string>

namespace anneal::coordinator {

class Coordinator;

std::string RenderModelsJson(const Coordinator& core);
std::map<std::string, std::string> RenderModelDetailsJson(const Coordinator& core);

}  // namespace anneal::coordinator
