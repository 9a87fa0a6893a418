// The model registry's HTTP bodies (coordinator/model_registry_json.h).
#include "coordinator/model_registry_json.h"

#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>

#include "coordinator/coordinator.h"

namespace anneal::coordinator {

namespace {

nlohmann::json ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(message, &text, options).ok()) return nlohmann::json::object();
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

}  // namespace

std::string RenderModelsJson(const Coordinator& core) {
  nlohmann::json models = nlohmann::json::array();
  for (const auto& m : core.models().Models()) {
    nlohmann::json entry = ToJson(m);
    const pb::ModelVersionRecord* production = core.models().Production(m.team(), m.name());
    if (production != nullptr) {
      pb::ModelVersionRecord brief = *production;
      brief.clear_spec_yaml();
      entry["production"] = ToJson(brief);
    } else {
      entry["production"] = nullptr;
    }
    models.push_back(std::move(entry));
  }
  return nlohmann::json{{"models", models}}.dump();
}

std::map<std::string, std::string> RenderModelDetailsJson(const Coordinator& core) {
  std::map<std::string, std::string> out;
  for (const auto& m : core.models().Models()) {
    nlohmann::json versions = nlohmann::json::array();
    for (const auto& v : core.models().Versions(m.team(), m.name())) versions.push_back(ToJson(v));
    out[m.team() + "/" + m.name()] = nlohmann::json{{"model", ToJson(m)}, {"versions", versions}}.dump();
  }
  return out;
}

}  // namespace anneal::coordinator
