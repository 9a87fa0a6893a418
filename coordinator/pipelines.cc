// PipelineManager: the run and step state machines (coordinator/pipelines.h).
#include "coordinator/pipelines.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "jobspec/pipeline.h"
#include "jobspec/values.h"
#include "protocol/states.h"

namespace anneal::coordinator {

using storage::Table;

namespace {

constexpr std::string_view kIdPrefix = "pipe-";

bool Failedish(pb::PipelineStepState s) {
  return s == pb::PIPELINE_STEP_FAILED || s == pb::PIPELINE_STEP_SKIPPED || s == pb::PIPELINE_STEP_CANCELLED;
}

}  // namespace

pb::PipelineStepRecord* FindStep(pb::PipelineRunRecord& run, const std::string& name) {
  for (auto& step : *run.mutable_steps()) {
    if (step.name() == name) return &step;
  }
  return nullptr;
}

const pb::PipelineStepRecord* FindStep(const pb::PipelineRunRecord& run, const std::string& name) {
  for (const auto& step : run.steps()) {
    if (step.name() == name) return &step;
  }
  return nullptr;
}

bool StepEnded(pb::PipelineStepState state) {
  return state == pb::PIPELINE_STEP_SUCCEEDED || Failedish(state);
}

bool RunEnded(pb::PipelineRunState state) {
  return state == pb::PIPELINE_SUCCEEDED || state == pb::PIPELINE_FAILED || state == pb::PIPELINE_CANCELLED;
}

std::string RunOutputDir(const std::string& spec_output_dir, const std::string& run_id) {
  const std::filesystem::path dir(spec_output_dir);
  for (const auto& part : dir) {
    if (part == run_id) return spec_output_dir;
  }
  std::string base = spec_output_dir;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  return base + "/" + run_id;
}

PipelineManager::PipelineManager(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock,
                                 PipelineHost* host)
    : batch_(batch), store_(store), clock_(clock), host_(host) {}

Status PipelineManager::Recover() {
  ASSIGN_OR_RETURN(auto last, store_->LastKeyWithPrefix(Table::kPipelines, kIdPrefix));
  if (last) next_number_ = std::strtoull(last->c_str() + kIdPrefix.size(), nullptr, 10) + 1;
  RETURN_IF_ERROR(store_->ScanRecords<pb::PipelineRunRecord>(Table::kPipelines, kIdPrefix, [&](const auto& run) {
    if (!RunEnded(run.state())) runs_[run.pipeline_id()] = run;
    return true;
  }));
  if (!runs_.empty()) spdlog::info("recovered {} pipeline run(s) not ended", runs_.size());
  return Status::Ok();
}

std::string PipelineManager::NextId() {
  return fmt::format("{}{:06d}", kIdPrefix, next_number_++);
}

std::string PipelineManager::PeekNextId() const {
  return fmt::format("{}{:06d}", kIdPrefix, next_number_);
}

void PipelineManager::Create(pb::PipelineRunRecord run) {
  run.set_state(pb::PIPELINE_RUNNING);
  run.set_created_at_ms(clock_->NowMs());
  for (auto& step : *run.mutable_steps()) step.set_state(pb::PIPELINE_STEP_WAITING);
  Write(run);
  runs_[run.pipeline_id()] = std::move(run);
}

void PipelineManager::Write(const pb::PipelineRunRecord& run) {
  batch_->Put(Table::kPipelines, run.pipeline_id(), run);
}

void PipelineManager::Advance() {
  std::vector<std::string> ended;
  for (auto& [id, run] : runs_) {
    if (AdvanceRun(run)) Write(run);
    if (RunEnded(run.state())) ended.push_back(id);
  }
  for (const auto& id : ended) runs_.erase(id);  // written above; Get() reads it from the store after the commit
}

bool PipelineManager::AdvanceRun(pb::PipelineRunRecord& run) {
  bool changed = false;
  // Steps come in the YAML's order, which need not be a run order: repeat until nothing moves.
  for (bool moved = true; moved;) {
    moved = false;
    for (auto& step : *run.mutable_steps()) moved |= AdvanceStep(run, step);
    changed |= moved;
  }
  const bool all_ended =
      std::all_of(run.steps().begin(), run.steps().end(), [](const auto& s) { return StepEnded(s.state()); });
  if (!all_ended) return changed;
  const bool all_succeeded = std::all_of(run.steps().begin(), run.steps().end(),
                                         [](const auto& s) { return s.state() == pb::PIPELINE_STEP_SUCCEEDED; });
  run.set_state(all_succeeded            ? pb::PIPELINE_SUCCEEDED
                : run.cancel_requested() ? pb::PIPELINE_CANCELLED
                                         : pb::PIPELINE_FAILED);
  run.set_finished_at_ms(clock_->NowMs());
  spdlog::info("pipeline run {} {}", run.pipeline_id(), protocol::StateName(run.state()));
  return true;
}

bool PipelineManager::AdvanceStep(pb::PipelineRunRecord& run, pb::PipelineStepRecord& step) {
  if (step.state() == pb::PIPELINE_STEP_RUNNING) {
    if (step.job_id().empty()) return false;  // a promote step never stays RUNNING past its round
    auto outcome = host_->JobOutcome(step.job_id());
    if (!outcome) return false;
    step.set_output_dir(outcome->output_dir);
    step.mutable_metrics()->clear();
    for (const auto& [key, value] : outcome->metrics) (*step.mutable_metrics())[key] = value;
    if (outcome->state == pb::JOB_SUCCEEDED) {
      EndStep(step, pb::PIPELINE_STEP_SUCCEEDED, outcome->result);
    } else if (outcome->state == pb::JOB_CANCELLED) {
      EndStep(step, pb::PIPELINE_STEP_CANCELLED, fmt::format("job {} cancelled: {}", step.job_id(), outcome->result));
    } else {
      EndStep(step, pb::PIPELINE_STEP_FAILED, fmt::format("job {} failed: {}", step.job_id(), outcome->result));
    }
    return true;
  }
  if (step.state() != pb::PIPELINE_STEP_WAITING) return false;
  if (run.cancel_requested()) {
    EndStep(step, pb::PIPELINE_STEP_CANCELLED, "the pipeline run was cancelled: " + run.cancel_reason());
    return true;
  }
  for (const auto& need : step.needs()) {
    const pb::PipelineStepRecord* other = FindStep(run, need);
    if (other != nullptr && Failedish(other->state())) {
      EndStep(step, pb::PIPELINE_STEP_SKIPPED,
              fmt::format("step '{}' it needs {}", need, protocol::StateName(other->state())));
      return true;
    }
  }
  for (const auto& need : step.needs()) {
    const pb::PipelineStepRecord* other = FindStep(run, need);
    if (other == nullptr || other->state() != pb::PIPELINE_STEP_SUCCEEDED) return false;
  }
  StartStep(run, step);
  return true;
}

void PipelineManager::EndStep(pb::PipelineStepRecord& step, pb::PipelineStepState state, const std::string& message) {
  step.set_state(state);
  step.set_message(message);
  step.set_finished_at_ms(clock_->NowMs());
}

void PipelineManager::StartStep(pb::PipelineRunRecord& run, pb::PipelineStepRecord& step) {
  step.set_state(pb::PIPELINE_STEP_RUNNING);
  step.set_started_at_ms(clock_->NowMs());
  step.set_tries(step.tries() + 1);
  step.clear_message();
  if (step.kind() == "promote") {
    auto outcome = host_->Promote(run, step);
    if (!outcome.ok()) {
      EndStep(step, pb::PIPELINE_STEP_FAILED, "the model registry refused: " + outcome.status().message());
      return;
    }
    step.set_promoted(outcome->promoted);
    step.set_model_version(outcome->version);
    EndStep(step, pb::PIPELINE_STEP_SUCCEEDED, outcome->message);
    return;
  }
  auto params = ResolveReferences(run, step);
  if (!params.ok()) return EndStep(step, pb::PIPELINE_STEP_FAILED, params.status().message());
  step.mutable_params()->clear();
  for (const auto& [ref, value] : *params) (*step.mutable_params())[ref] = value;
  const std::string spec = jobspec::SubstituteReferences(step.spec_yaml(), *params);
  const std::vector<std::string> overrides(step.overrides().begin(), step.overrides().end());
  auto job = host_->StartStepJob(run, step, spec, overrides);
  if (!job.ok()) {
    return EndStep(step, pb::PIPELINE_STEP_FAILED, "its job was refused: " + job.status().message());
  }
  step.set_job_id(job->job_id);
  step.set_output_dir(job->output_dir);
  spdlog::info("pipeline run {}: step '{}' started job {}", run.pipeline_id(), step.name(), job->job_id);
}

StatusOr<std::map<std::string, std::string>> PipelineManager::ResolveReferences(const pb::PipelineRunRecord& run,
                                                                                const pb::PipelineStepRecord& step) {
  using Kind = jobspec::Reference::Kind;
  ASSIGN_OR_RETURN(auto refs, jobspec::FindReferences(step.spec_yaml(), fmt::format("step '{}'", step.name())));
  std::map<std::string, std::string> values;
  for (const auto& ref : refs) {
    if (ref.kind == Kind::kPipelineId) {
      values[ref.text] = run.pipeline_id();
      continue;
    }
    if (ref.kind == Kind::kModelProductionPath) {
      auto path = host_->ProductionPath(run.team(), ref.target);
      if (!path.ok()) return path.status().WithContext(fmt::format("reference ${{{}}}", ref.text));
      values[ref.text] = *path;
      continue;
    }
    const pb::PipelineStepRecord* other = FindStep(run, ref.target);
    if (other == nullptr) return NotFoundError(fmt::format("reference ${{{}}}: no step '{}'", ref.text, ref.target));
    if (ref.kind == Kind::kStepOutputDir) values[ref.text] = other->output_dir();
    if (ref.kind == Kind::kStepJobId) values[ref.text] = other->job_id();
    if (ref.kind == Kind::kStepMetric) {
      auto it = other->metrics().find(ref.key);
      if (it == other->metrics().end()) {
        std::vector<std::string> known;
        for (const auto& [key, value] : other->metrics()) known.push_back(key);
        std::sort(known.begin(), known.end());
        return NotFoundError(fmt::format("reference ${{{}}}: step '{}' reported no metric '{}' (it reported: {})",
                                         ref.text, ref.target, ref.key,
                                         known.empty() ? "none" : fmt::format("{}", fmt::join(known, ", "))));
      }
      values[ref.text] = jobspec::FormatNumber(it->second);
    }
  }
  return values;
}

StatusOr<pb::PipelineRunState> PipelineManager::Cancel(const std::string& run_id, const std::string& reason) {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) {
    ASSIGN_OR_RETURN(pb::PipelineRunRecord ended, Get(run_id));
    return ended.state();  // already ended: nothing to cancel
  }
  pb::PipelineRunRecord& run = it->second;
  run.set_cancel_requested(true);
  run.set_cancel_reason(reason.empty() ? "cancelled" : reason);
  for (const auto& step : run.steps()) {
    if (step.state() == pb::PIPELINE_STEP_RUNNING && !step.job_id().empty()) {
      host_->CancelJob(step.job_id(), fmt::format("pipeline run {} cancelled: {}", run_id, run.cancel_reason()));
    }
  }
  AdvanceRun(run);  // the waiting steps end now; the running ones when their jobs do
  Write(run);
  const pb::PipelineRunState state = run.state();
  if (RunEnded(state)) runs_.erase(it);
  return state;
}

StatusOr<std::vector<std::string>> PipelineManager::Retry(const std::string& run_id) {
  if (runs_.count(run_id)) {
    return FailedPreconditionError(
        fmt::format("pipeline run {} is still running: retry re-runs an ended run's failed steps (cancel it first: "
                    "anneal pipeline cancel {})",
                    run_id, run_id));
  }
  ASSIGN_OR_RETURN(pb::PipelineRunRecord run, Get(run_id));
  if (run.state() == pb::PIPELINE_SUCCEEDED) {
    return FailedPreconditionError(
        fmt::format("pipeline run {} succeeded: every step succeeded, none to retry", run_id));
  }
  std::vector<std::string> again;
  for (auto& step : *run.mutable_steps()) {
    if (!Failedish(step.state())) continue;
    again.push_back(step.name());
    if (!step.job_id().empty()) step.add_previous_job_ids(step.job_id());
    step.clear_job_id();
    step.clear_output_dir();
    step.clear_metrics();
    step.clear_params();
    step.clear_message();
    step.clear_promoted();
    step.clear_model_version();
    step.set_finished_at_ms(0);
    step.set_state(pb::PIPELINE_STEP_WAITING);
  }
  run.set_state(pb::PIPELINE_RUNNING);
  run.set_cancel_requested(false);
  run.clear_cancel_reason();
  run.set_finished_at_ms(0);
  run.set_retries(run.retries() + 1);
  Write(run);
  runs_[run_id] = std::move(run);
  return again;
}

const pb::PipelineRunRecord* PipelineManager::FindActive(const std::string& run_id) const {
  auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : &it->second;
}

StatusOr<pb::PipelineRunRecord> PipelineManager::Get(const std::string& run_id) const {
  if (const pb::PipelineRunRecord* run = FindActive(run_id)) return *run;
  pb::PipelineRunRecord run;
  Status st = store_->Get(Table::kPipelines, run_id, &run);
  if (st.code() == StatusCode::kNotFound) {
    return NotFoundError(fmt::format("no pipeline run '{}' (anneal pipeline ls lists them)", run_id));
  }
  RETURN_IF_ERROR(st);
  return run;
}

StatusOr<std::vector<pb::PipelineRunRecord>> PipelineManager::List(
    bool include_ended, size_t limit, const std::function<bool(const pb::PipelineRunRecord&)>& keep) const {
  std::vector<pb::PipelineRunRecord> out;
  if (!include_ended) {
    for (auto it = runs_.rbegin(); it != runs_.rend() && out.size() < limit; ++it) {
      if (keep(it->second)) out.push_back(it->second);
    }
    return out;
  }
  RETURN_IF_ERROR(store_->ScanRecordsReverse<pb::PipelineRunRecord>(Table::kPipelines, kIdPrefix, [&](const auto& r) {
    const pb::PipelineRunRecord* active = FindActive(r.pipeline_id());
    const pb::PipelineRunRecord& run = active != nullptr ? *active : r;  // memory is ahead of the store
    if (keep(run)) out.push_back(run);
    return out.size() < limit;
  }));
  return out;
}

}  // namespace anneal::coordinator
