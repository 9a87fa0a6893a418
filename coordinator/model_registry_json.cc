// The model registry's HTTP bodies (coordinator/model_registry_json.h).
#include "coordinator/model_registry_json.h"

#include <nlohmann/json.hpp>

#include "coordinator/coordinator.h"
#include "protocol/json.h"

namespace anneal::coordinator {

std::string RenderModelsJson(const Coordinator& core) {
  nlohmann::json models = nlohmann::json::array();
  for (const auto& m : core.models().Models()) {
    nlohmann::json entry = protocol::MessageToJson(m);
    const pb::ModelVersionRecord* production = core.models().Production(m.team(), m.name());
    if (production != nullptr) {
      pb::ModelVersionRecord brief = *production;
      brief.clear_spec_yaml();
      entry["production"] = protocol::MessageToJson(brief);
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
    for (const auto& v : core.models().Versions(m.team(), m.name())) versions.push_back(protocol::MessageToJson(v));
    out[m.team() + "/" + m.name()] =
        nlohmann::json{{"model", protocol::MessageToJson(m)}, {"versions", versions}}.dump();
  }
  return out;
}

}  // namespace anneal::coordinator
