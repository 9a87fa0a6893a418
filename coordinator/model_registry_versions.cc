// ModelRegistry (coordinator/model_registry.h): registering versions from jobs, promote-if-better, promote and
// archive by hand, and the default FileInspector.
#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "coordinator/dataset_hash.h"
#include "coordinator/model_registry.h"
#include "coordinator/promotion.h"
#include "protocol/states.h"

namespace anneal::coordinator {

namespace fs = std::filesystem;

namespace {

std::string FileSha256(const fs::path& path) {
  if (sodium_init() < 0) return "";
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() > 0) {
      crypto_hash_sha256_update(&state, reinterpret_cast<const unsigned char*>(buffer.data()),
                                static_cast<size_t>(in.gcount()));
    }
  }
  if (in.bad()) return "";
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state, digest);
  char hex[2 * crypto_hash_sha256_BYTES + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

FileInspector::Files ListTopLevelFiles(const std::string& dir) {
  FileInspector::Files out;
  std::error_code ec;
  std::vector<fs::directory_entry> entries;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(*it);
  if (ec) {
    out.note = fmt::format("not readable on the coordinator: {}", ec.message());
    return out;
  }
  std::sort(entries.begin(), entries.end());
  uint64_t hashed = 0;
  bool skipped_hash = false;
  for (const auto& e : entries) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.' || !e.is_regular_file(ec)) continue;  // checkpoint-N/, .anneal-lock
    pb::CheckpointFile* f = &out.files.emplace_back();
    f->set_path(name);
    f->set_size_bytes(e.file_size(ec));
    out.total_bytes += f->size_bytes();
    if (hashed + f->size_bytes() <= kMaxInlineHashBytes) {
      hashed += f->size_bytes();
      f->set_sha256(FileSha256(e.path()));
    } else {
      skipped_hash = true;
    }
  }
  if (out.files.empty()) out.note = "no files in the directory on the coordinator";
  if (skipped_hash) {
    out.note = fmt::format("sha256 only for the first {} MiB of files", kMaxInlineHashBytes >> 20);
  }
  return out;
}

std::vector<pb::DatasetFingerprint> HashDatasets(const jobspec::DataSpec& data, const std::vector<std::string>& names) {
  std::vector<pb::DatasetFingerprint> out;
  for (const auto& name : names) {
    pb::DatasetFingerprint fp;
    fp.set_name(name);
    auto hashes = FingerprintDatasets(data, {name}, kMaxInlineHashBytes);
    if (hashes.ok() && !hashes->empty()) fp.set_content_hash(hashes->front().content_hash);
    out.push_back(std::move(fp));
  }
  return out;
}

Status CheckSourceJob(const std::string& team, const pb::JobRecord& job) {
  if (job.job_id().empty()) return InvalidArgumentError("register a model version: no source job given");
  if ((job.kind() != pb::JOB_TRAIN && job.kind() != pb::JOB_EXPORT) || job.state() != pb::JOB_SUCCEEDED) {
    return FailedPreconditionError(
        fmt::format("job {} ({} job, {}): only a SUCCEEDED train or export job's output can become a model version",
                    job.job_id(), protocol::KindName(job.kind()), protocol::StateName(job.state())));
  }
  if (job.output_dir().empty()) {
    return FailedPreconditionError(fmt::format("job {} has no output_dir to register", job.job_id()));
  }
  const std::string job_team = job.team().empty() ? "default" : job.team();
  if (job_team != team) {
    return FailedPreconditionError(
        fmt::format("job {} belongs to team '{}', not to team '{}' of the model", job.job_id(), job_team, team));
  }
  return Status::Ok();
}

}  // namespace

FileInspector InspectLocalFiles() {
  return {ListTopLevelFiles, HashDatasets};
}

StatusOr<std::pair<ModelRegistry::Model*, pb::ModelVersionRecord*>> ModelRegistry::RegisterVersion(
    const std::string& team, const std::string& model, const pb::JobRecord& job, const std::string& actor,
    int64_t now_ms, bool* existed, storage::WriteBatch& batch) {
  RETURN_IF_ERROR(CheckModelName(team, "team name"));
  RETURN_IF_ERROR(CheckModelName(model));
  RETURN_IF_ERROR(CheckSourceJob(team, job));
  Model* m = Find(team, model);
  if (m != nullptr) {
    for (auto& [n, v] : m->versions) {
      if (v.source_job_id() == job.job_id()) {
        *existed = true;
        return std::make_pair(m, &v);
      }
    }
  }
  // Another model's version of the same directory is fine (one output, two names); an overlapping but
  // different directory is not: the job's output would lie inside another version's files.
  if (const pb::ModelVersionRecord* other = Overlapping(job.output_dir());
      other != nullptr && other->source_job_id() != job.job_id()) {
    return FailedPreconditionError(fmt::format("job {}'s output_dir {} overlaps {} of model version {}/{} v{}",
                                               job.job_id(), job.output_dir(), other->path(), other->team(),
                                               other->model(), other->version()));
  }
  if (m == nullptr) {
    m = &models_[{team, model}];
    m->record.set_team(team);
    m->record.set_name(model);
    m->record.set_created_at_ms(now_ms);
    m->record.set_created_by(actor);
  }
  *existed = false;
  const uint32_t number = m->record.latest_version() + 1;
  m->record.set_latest_version(number);
  pb::ModelVersionRecord& v = m->versions[number];
  v.set_team(team);
  v.set_model(model);
  v.set_version(number);
  v.set_source_job_id(job.job_id());
  v.set_pipeline_id(job.pipeline_id());
  v.set_pipeline_step(job.pipeline_step());
  v.set_path(fs::path(job.output_dir()).lexically_normal().string());
  while (v.path().size() > 1 && v.path().back() == '/') v.mutable_path()->pop_back();
  v.set_spec_yaml(job.spec_yaml());
  v.set_stage(pb::MODEL_CANDIDATE);
  v.set_created_at_ms(now_ms);
  v.set_created_by(actor);
  auto spec = jobspec::ParseJobSpec(job.spec_yaml(), "stored spec of " + job.job_id(), {}, {.open_files = false});
  if (spec.ok()) {
    v.set_base_model(spec->model.model_name_or_path);
    // A LoRA train job's output is its PEFT adapter; full and freeze runs and exports write a whole HF model.
    const bool adapter =
        spec->kind == jobspec::JobKind::kTrain && spec->finetuning.type == jobspec::FinetuningType::kLora;
    v.set_artifact(adapter ? pb::MODEL_PEFT_ADAPTER : pb::MODEL_MERGED);
    if (inspector_.datasets) {
      for (auto& d : inspector_.datasets(spec->data, spec->data.dataset)) *v.add_datasets() = std::move(d);
    }
  }
  if (inspector_.files) {
    FileInspector::Files files = inspector_.files(v.path());
    for (auto& f : files.files) *v.add_files() = std::move(f);
    v.set_total_bytes(files.total_bytes);
    v.set_files_note(files.note);
  }
  Write(*m, batch);
  Write(v, batch);
  return std::make_pair(m, &v);
}

StatusOr<pb::ModelVersionRecord> ModelRegistry::Register(const std::string& team, const std::string& model,
                                                         const pb::JobRecord& source_job, const std::string& actor,
                                                         int64_t now_ms, storage::WriteBatch& batch) {
  bool existed = false;
  ASSIGN_OR_RETURN(auto registered, RegisterVersion(team, model, source_job, actor, now_ms, &existed, batch));
  return *registered.second;
}

StatusOr<PromoteResult> ModelRegistry::RegisterAndPromoteIfBetter(const PromoteRequest& request, int64_t now_ms,
                                                                  storage::WriteBatch& batch) {
  RETURN_IF_ERROR(CheckPromotionParams(request.metric, request.margin));
  // Checked before anything is registered: a refused request leaves no trace.
  RETURN_IF_ERROR(CheckModelName(request.team, "team name"));
  RETURN_IF_ERROR(CheckModelName(request.model));
  RETURN_IF_ERROR(CheckSourceJob(request.team, request.source_job));
  bool existed = false;
  ASSIGN_OR_RETURN(auto registered, RegisterVersion(request.team, request.model, request.source_job, request.actor,
                                                    now_ms, &existed, batch));
  auto& [model, version] = registered;
  if (existed) return PromoteResult{*version, version->stage() == pb::MODEL_PRODUCTION, version->decision().text()};
  if (version->pipeline_id().empty()) version->set_pipeline_id(request.pipeline_id);  // a job made outside it
  if (request.datasets.empty() && request.trained_by && inspector_.datasets) {
    auto trained = jobspec::ParseJobSpec(request.trained_by->spec_yaml(),
                                         "stored spec of " + request.trained_by->job_id(), {}, {.open_files = false});
    if (trained.ok()) {
      version->clear_datasets();
      for (auto& d : inspector_.datasets(trained->data, trained->data.dataset)) *version->add_datasets() = std::move(d);
    }
  }
  if (!request.datasets.empty()) {
    version->clear_datasets();
    for (const auto& d : request.datasets) *version->add_datasets() = d;
  }
  auto add_eval = [&](pb::ModelVersionRecord& v, const std::map<std::string, double>& metrics,
                      const std::string& job_id) {
    pb::ModelEvalResult* e = v.add_evals();
    e->set_eval_set(request.eval_set);
    e->mutable_metrics()->insert(metrics.begin(), metrics.end());
    e->set_job_id(job_id);
    e->set_pipeline_id(request.pipeline_id);
    e->set_time_ms(now_ms);
  };
  add_eval(*version, request.candidate_metrics, request.candidate_eval_job_id);

  PromotionInput in;
  in.metric = request.metric;
  in.higher_is_better = request.higher_is_better;
  in.margin = request.margin;
  in.eval_set = request.eval_set;
  in.candidate = MetricValue(request.candidate_metrics, request.metric, &in.candidate_reported);
  pb::ModelVersionRecord* production =
      model->record.production_version() == 0 ? nullptr : &model->versions.at(model->record.production_version());
  if (production != nullptr) {
    in.production_version = production->version();
    if (request.production_metrics) {
      in.production = MetricValue(*request.production_metrics, request.metric);
      in.production_source =
          request.pipeline_id.empty() ? "evaluated alongside" : "evaluated in pipeline " + request.pipeline_id;
      add_eval(*production, *request.production_metrics, request.production_eval_job_id);
      Write(*production, batch);
    } else {
      // The newest number production recorded for the SAME eval set (never one from other data).
      for (auto e = production->evals().rbegin(); e != production->evals().rend() && !in.production; ++e) {
        if (e->eval_set() != request.eval_set) continue;
        std::map<std::string, double> metrics(e->metrics().begin(), e->metrics().end());
        in.production = MetricValue(metrics, request.metric);
        in.production_source = "recorded for this eval set at " + std::to_string(e->time_ms()) + " ms";
      }
    }
  }
  const PromotionOutcome outcome = DecidePromotion(in);

  pb::PromoteDecision* d = version->mutable_decision();
  d->set_promoted(outcome.promote);
  d->set_metric(request.metric);
  d->set_higher_is_better(request.higher_is_better);
  d->set_margin(request.margin);
  d->set_has_candidate_value(in.candidate.has_value());
  d->set_candidate_value(in.candidate.value_or(0));
  d->set_production_version(in.production_version);
  d->set_has_production_value(in.production.has_value());
  d->set_production_value(in.production.value_or(0));
  d->set_production_source(in.production_source);
  d->set_eval_set(request.eval_set);
  d->set_text(outcome.text);
  d->set_time_ms(now_ms);
  d->set_actor(request.actor);
  if (outcome.promote) {
    const std::string by_step =
        request.pipeline_id.empty() ? "" : fmt::format("step '{}' of pipeline {}: ", request.step, request.pipeline_id);
    MakeProduction(*model, *version, request.actor, by_step + outcome.text, now_ms, batch);
  } else {
    Write(*version, batch);
  }
  return PromoteResult{*version, outcome.promote, outcome.text};
}

StatusOr<pb::ModelVersionRecord*> ModelRegistry::FindVersionForChange(const std::string& team, const std::string& model,
                                                                      uint32_t version) {
  Model* m = Find(team, model);
  if (m == nullptr) {
    return NotFoundError(fmt::format("no model '{}' in team '{}' (anneal models ls lists them)", model, team));
  }
  auto it = m->versions.find(version);
  if (it == m->versions.end()) {
    return NotFoundError(fmt::format("model {}/{} has no version {} (its versions: 1-{}; anneal models show {}/{})",
                                     team, model, version, m->record.latest_version(), team, model));
  }
  return &it->second;
}

StatusOr<pb::ModelVersionRecord> ModelRegistry::Promote(const std::string& team, const std::string& model,
                                                        uint32_t version, const std::string& actor,
                                                        const std::string& reason, int64_t now_ms,
                                                        storage::WriteBatch& batch) {
  ASSIGN_OR_RETURN(pb::ModelVersionRecord * v, FindVersionForChange(team, model, version));
  RETURN_IF_ERROR(CheckStageChange(*v, pb::MODEL_PRODUCTION));
  const std::string why = reason.empty() ? "promoted by hand" : "promoted by hand: " + reason;
  MakeProduction(*Find(team, model), *v, actor, why, now_ms, batch);
  return *v;
}

StatusOr<pb::ModelVersionRecord> ModelRegistry::Archive(const std::string& team, const std::string& model,
                                                        uint32_t version, const std::string& actor,
                                                        const std::string& reason, int64_t now_ms,
                                                        storage::WriteBatch& batch) {
  ASSIGN_OR_RETURN(pb::ModelVersionRecord * v, FindVersionForChange(team, model, version));
  RETURN_IF_ERROR(CheckStageChange(*v, pb::MODEL_ARCHIVED));
  ChangeStage(*v, pb::MODEL_ARCHIVED, actor, reason.empty() ? "archived by hand" : "archived by hand: " + reason,
              now_ms);
  Write(*v, batch);
  return *v;
}

}  // namespace anneal::coordinator
