// The pipeline's model registry calls (coordinator/model_registry.h): ${models.NAME.production.path} and the
// built-in promote step, which registers the train step's output and promotes it only if it is better.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "coordinator/coordinator.h"
#include "coordinator/dataset_hash.h"

namespace anneal::coordinator {

namespace {

// The eval set the eval step measured: its spec's eval datasets (an eval job's `dataset`, or `eval_dataset`)
// with their content hashes. When the files are not readable on the coordinator (or too large to hash on the
// loop), the names alone, with empty hashes: metrics are then comparable by name only.
std::string EvalSetOf(const pb::JobRecord& eval_job) {
  auto spec = jobspec::ParseJobSpec(eval_job.spec_yaml(), eval_job.job_id(), {}, {.open_files = false});
  if (!spec.ok()) return "";
  const std::vector<std::string>& names =
      spec->data.eval_dataset.empty() ? spec->data.dataset : spec->data.eval_dataset;
  auto hashes = FingerprintDatasets(spec->data, names, kMaxInlineHashBytes);
  if (hashes.ok()) return EvalSetFingerprint(std::move(*hashes));
  spdlog::warn("eval set of job {} not hashed ({}): compared by dataset names", eval_job.job_id(),
               hashes.status().message());
  std::vector<DatasetHash> unhashed;
  for (const auto& name : names) unhashed.push_back({name, ""});
  return EvalSetFingerprint(std::move(unhashed));
}

}  // namespace

std::optional<pb::JobRecord> Coordinator::TrainJobMergedBy(const pb::PipelineRunRecord& run,
                                                           const pb::JobRecord& export_job) {
  auto spec = jobspec::ParseJobSpec(export_job.spec_yaml(), export_job.job_id(), {}, {.open_files = false});
  if (!spec.ok() || spec->model.adapter_name_or_path.empty()) return std::nullopt;
  auto normal = [](std::string path) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    return std::filesystem::path(path).lexically_normal();
  };
  const std::filesystem::path adapter = normal(spec->model.adapter_name_or_path);
  for (const pb::PipelineStepRecord& step : run.steps()) {
    if (step.kind() != "train" || step.job_id().empty()) continue;
    const std::filesystem::path out = normal(step.output_dir());
    // The adapter is the train step's output_dir, or a checkpoint-N inside it.
    if (adapter != out && adapter.parent_path() != out) continue;
    if (auto job = jobs_.GetRecord(step.job_id()); job.ok()) return *job;
  }
  return std::nullopt;
}

StatusOr<std::string> Coordinator::PipelineProductionPath(const std::string& team, const std::string& model) {
  const pb::ModelVersionRecord* version = models_.Production(team, model);
  if (version == nullptr) {
    return NotFoundError(
        fmt::format("model '{}' of team '{}' has no production version (anneal models ls)", model, team));
  }
  return version->path();
}

StatusOr<PromoteOutcome> Coordinator::PipelinePromote(const pb::PipelineRunRecord& run,
                                                      const pb::PipelineStepRecord& step) {
  const pb::PipelinePromoteSpec& p = step.promote();
  const pb::PipelineStepRecord* train = FindStep(run, p.train_step());
  const pb::PipelineStepRecord* eval = FindStep(run, p.eval_step());
  if (train == nullptr || eval == nullptr) {
    return FailedPreconditionError(
        fmt::format("step '{}': no step '{}' or '{}'", step.name(), p.train_step(), p.eval_step()));
  }
  ASSIGN_OR_RETURN(pb::JobRecord source, jobs_.GetRecord(train->job_id()));
  ASSIGN_OR_RETURN(pb::JobRecord eval_job, jobs_.GetRecord(eval->job_id()));
  PromoteRequest request;
  request.team = run.team();
  request.model = p.model();
  request.source_job = std::move(source);
  request.pipeline_id = run.pipeline_id();
  request.step = step.name();
  request.metric = p.metric();
  request.higher_is_better = p.higher_is_better();
  request.margin = p.margin();
  request.candidate_metrics = {eval->metrics().begin(), eval->metrics().end()};
  request.candidate_eval_job_id = eval->job_id();
  if (!p.production_eval_step().empty()) {
    if (const pb::PipelineStepRecord* prod = FindStep(run, p.production_eval_step())) {
      request.production_metrics = std::map<std::string, double>(prod->metrics().begin(), prod->metrics().end());
      request.production_eval_job_id = prod->job_id();
    }
  }
  request.eval_set = EvalSetOf(eval_job);
  if (request.source_job.kind() == pb::JOB_EXPORT) request.trained_by = TrainJobMergedBy(run, request.source_job);
  request.actor = run.owner();
  ASSIGN_OR_RETURN(PromoteResult result, models_.RegisterAndPromoteIfBetter(request, clock_->NowMs(), batch_));
  return PromoteOutcome{result.promoted, fmt::format("{} v{}", p.model(), result.version.version()), result.decision};
}

}  // namespace anneal::coordinator
