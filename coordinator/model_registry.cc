// ModelRegistry (coordinator/model_registry.h): models, versions, stages, promote-if-better.
#include "coordinator/model_registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "coordinator/promotion.h"
#include "protocol/states.h"
#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

namespace {

std::string NormalDir(const std::string& dir) {
  std::string key = std::filesystem::path(dir).lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  return key;
}

// `inner` equals `outer` or lies below it, component by component.
bool Within(const std::string& inner, const std::string& outer) {
  if (inner == outer) return true;
  const std::string prefix = outer == "/" ? "/" : outer + "/";
  return inner.rfind(prefix, 0) == 0;
}

std::string VersionName(const pb::ModelVersionRecord& v) {
  return fmt::format("{}/{} v{}", v.team(), v.model(), v.version());
}

}  // namespace

Status CheckModelName(const std::string& name, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError(
        fmt::format("{} '{}': {} (1-64 characters of A-Z a-z 0-9 . _ -, not starting with "
                    "'.' or '-')",
                    what, name, why));
  };
  if (name.empty()) return InvalidArgumentError(fmt::format("{} is empty", what));
  if (name.size() > 64) return bad(fmt::format("{} characters is too long", name.size()));
  if (name[0] == '.' || name[0] == '-') return bad("starts with '" + std::string(1, name[0]) + "'");
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return bad(fmt::format("character '{}' is not allowed", c));
    }
  }
  return Status::Ok();
}

Status CheckStageChange(const pb::ModelVersionRecord& version, pb::ModelStage to) {
  const pb::ModelStage from = version.stage();
  const std::string name = VersionName(version);
  if (from == to) {
    return FailedPreconditionError(fmt::format("{} is already {}", name, protocol::StateName(to)));
  }
  if (to == pb::MODEL_CANDIDATE) {
    return FailedPreconditionError(fmt::format(
        "{} is {}: a version never becomes a candidate again (promote it to production, or register the job anew)",
        name, protocol::StateName(from)));
  }
  if (from == pb::MODEL_PRODUCTION && to == pb::MODEL_ARCHIVED) {
    // Allowed only through MakeProduction (replaced); by hand it would leave the model without production.
    return FailedPreconditionError(
        fmt::format("{} is in production: it is archived when another version is promoted (anneal models promote {}/{} "
                    "VERSION), never left without a replacement",
                    name, version.team(), version.model()));
  }
  const bool allowed = (from == pb::MODEL_CANDIDATE && to == pb::MODEL_PRODUCTION) ||
                       (from == pb::MODEL_CANDIDATE && to == pb::MODEL_ARCHIVED) ||
                       (from == pb::MODEL_ARCHIVED && to == pb::MODEL_PRODUCTION);
  if (!allowed) {
    return FailedPreconditionError(
        fmt::format("{}: no stage change from {} to {}", name, protocol::StateName(from), protocol::StateName(to)));
  }
  return Status::Ok();
}

std::string ModelKey(const std::string& team, const std::string& name) {
  return "m/" + team + "/" + name;
}
std::string VersionKey(const std::string& team, const std::string& name, uint32_t version) {
  return storage::JobStepKey("v/" + team + "/" + name, version);
}

ModelRegistry::ModelRegistry(FileInspector inspector) : inspector_(std::move(inspector)) {}

Status ModelRegistry::Load(const storage::StateStore& store) {
  models_.clear();
  RETURN_IF_ERROR(store.ScanRecords<pb::ModelRecord>(Table::kModels, "m/", [&](const pb::ModelRecord& m) {
    models_[{m.team(), m.name()}].record = m;
    return true;
  }));
  Status orphan;
  RETURN_IF_ERROR(store.ScanRecords<pb::ModelVersionRecord>(Table::kModels, "v/", [&](const pb::ModelVersionRecord& v) {
    Model* model = Find(v.team(), v.model());
    if (model == nullptr) {
      orphan = DataLossError(fmt::format("model registry: version {} has no model record", VersionName(v)));
      return false;
    }
    model->versions[v.version()] = v;
    return true;
  }));
  return orphan;
}

ModelRegistry::Model* ModelRegistry::Find(const std::string& team, const std::string& model) {
  auto it = models_.find({team, model});
  return it == models_.end() ? nullptr : &it->second;
}
const ModelRegistry::Model* ModelRegistry::Find(const std::string& team, const std::string& model) const {
  auto it = models_.find({team, model});
  return it == models_.end() ? nullptr : &it->second;
}

const pb::ModelRecord* ModelRegistry::FindModel(const std::string& team, const std::string& model) const {
  const Model* m = Find(team, model);
  return m == nullptr ? nullptr : &m->record;
}

const pb::ModelVersionRecord* ModelRegistry::FindVersion(const std::string& team, const std::string& model,
                                                         uint32_t version) const {
  const Model* m = Find(team, model);
  if (m == nullptr) return nullptr;
  auto it = m->versions.find(version);
  return it == m->versions.end() ? nullptr : &it->second;
}

const pb::ModelVersionRecord* ModelRegistry::Production(const std::string& team, const std::string& model) const {
  const Model* m = Find(team, model);
  return m == nullptr || m->record.production_version() == 0 ? nullptr
                                                             : FindVersion(team, model, m->record.production_version());
}

std::vector<pb::ModelVersionRecord> ModelRegistry::Versions(const std::string& team, const std::string& model) const {
  std::vector<pb::ModelVersionRecord> out;
  if (const Model* m = Find(team, model)) {
    for (const auto& [n, v] : m->versions) out.push_back(v);
  }
  return out;
}

std::vector<pb::ModelRecord> ModelRegistry::Models(const std::string& team) const {
  std::vector<pb::ModelRecord> out;
  for (const auto& [key, m] : models_) {
    if (team.empty() || key.first == team) out.push_back(m.record);
  }
  return out;
}

const pb::ModelVersionRecord* ModelRegistry::Overlapping(const std::string& dir) const {
  if (dir.empty()) return nullptr;
  const std::string path = NormalDir(dir);
  for (const auto& [key, m] : models_) {
    for (const auto& [n, v] : m.versions) {
      if (!v.path().empty() && (Within(path, v.path()) || Within(v.path(), path))) return &v;
    }
  }
  return nullptr;
}

bool ModelRegistry::Protects(const std::string& path) const {
  return Overlapping(path) != nullptr;
}

Status ModelRegistry::CheckOutputDir(const std::string& output_dir) const {
  const pb::ModelVersionRecord* v = Overlapping(output_dir);
  if (v == nullptr) return Status::Ok();
  return FailedPreconditionError(
      fmt::format("output_dir {} overlaps {}, which holds registered model version {} ({}): a run must not overwrite a "
                  "registered model; choose another output_dir",
                  output_dir, v->path(), VersionName(*v), protocol::StateName(v->stage())));
}

void ModelRegistry::Write(const Model& model, storage::WriteBatch& batch) const {
  batch.Put(Table::kModels, ModelKey(model.record.team(), model.record.name()), model.record);
}
void ModelRegistry::Write(const pb::ModelVersionRecord& v, storage::WriteBatch& batch) const {
  batch.Put(Table::kModels, VersionKey(v.team(), v.model(), v.version()), v);
}

void ModelRegistry::ChangeStage(pb::ModelVersionRecord& version, pb::ModelStage to, const std::string& actor,
                                const std::string& reason, int64_t now_ms) {
  pb::ModelStageChange* change = version.add_history();
  change->set_from(version.stage());
  change->set_to(to);
  change->set_time_ms(now_ms);
  change->set_actor(actor);
  change->set_reason(reason);
  version.set_stage(to);
  if (to == pb::MODEL_PRODUCTION) {
    version.set_promoted_at_ms(now_ms);
    version.set_promoted_by(actor);
  }
}

void ModelRegistry::MakeProduction(Model& model, pb::ModelVersionRecord& version, const std::string& actor,
                                   const std::string& reason, int64_t now_ms, storage::WriteBatch& batch) {
  const uint32_t old = model.record.production_version();
  if (old != 0 && old != version.version()) {
    pb::ModelVersionRecord& replaced = model.versions.at(old);
    ChangeStage(replaced, pb::MODEL_ARCHIVED, actor, fmt::format("replaced by v{}", version.version()), now_ms);
    Write(replaced, batch);
  }
  ChangeStage(version, pb::MODEL_PRODUCTION, actor, reason, now_ms);
  model.record.set_production_version(version.version());
  Write(version, batch);
  Write(model, batch);
}

}  // namespace anneal::coordinator
