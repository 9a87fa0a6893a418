// Pipelines on the coordinator: creating a run from its YAML (validated against the path policy), the client
// requests (submit, list, show, cancel, retry), and the PipelineHost the PipelineManager drives jobs through
// (coordinator/pipelines.h). The host's registry calls live in pipeline_promote.cc.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/pipelines.h"
#include "jobspec/pipeline.h"
#include "protocol/states.h"
#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

namespace {

// The values a step's references take when the run is validated at submit: the real pipeline id, the output
// directories the earlier steps will get, stand-ins for what only exists once jobs ran.
struct SubmitValues {
  std::map<std::string, std::string> values;
  bool model_unresolved = false;  // a ${models...} reference with no production version yet: no path check
};

// One reference's value at submit (see StandInValues).
std::string StandIn(const jobspec::Reference& ref, const std::string& run_id,
                    const std::map<std::string, std::string>& output_dirs,
                    const std::function<StatusOr<std::string>(const std::string&)>& production, SubmitValues* out) {
  using Kind = jobspec::Reference::Kind;
  switch (ref.kind) {
    case Kind::kPipelineId:
      return run_id;
    case Kind::kStepOutputDir:
      return output_dirs.at(ref.target);  // an ancestor: validated earlier in TopologicalOrder
    case Kind::kStepJobId:
      return std::string("job-000000");
    case Kind::kStepMetric:
      return std::string("1");
    case Kind::kModelProductionPath: {
      auto path = production(ref.target);
      out->model_unresolved |= !path.ok();
      return path.ok() ? *path : std::string("/unresolved-production-model");
    }
  }
  return "";
}

StatusOr<SubmitValues> StandInValues(const jobspec::PipelineStep& step, const std::string& run_id,
                                     const std::map<std::string, std::string>& output_dirs,
                                     const std::function<StatusOr<std::string>(const std::string&)>& production) {
  ASSIGN_OR_RETURN(auto refs, jobspec::FindReferences(step.job_yaml, fmt::format("step '{}'", step.name)));
  SubmitValues out;
  for (const auto& ref : refs) out.values.emplace(ref.text, StandIn(ref, run_id, output_dirs, production, &out));
  return out;
}

pb::PipelineRunRecord NewRunRecord(const jobspec::PipelineSpec& spec) {
  pb::PipelineRunRecord run;
  run.set_name(spec.name);
  for (const auto& s : spec.steps) {
    pb::PipelineStepRecord* step = run.add_steps();
    step->set_name(s.name);
    step->set_kind(std::string(jobspec::StepKindName(s.kind)));
    for (const auto& need : s.needs) step->add_needs(need);
    step->set_spec_yaml(s.job_yaml);
    for (const auto& o : s.overrides) step->add_overrides(o);
    if (s.kind == jobspec::StepKind::kPromote) {
      pb::PipelinePromoteSpec* p = step->mutable_promote();
      p->set_model(s.promote.model);
      p->set_train_step(s.promote.train_step);
      p->set_eval_step(s.promote.eval_step);
      p->set_metric(s.promote.metric);
      p->set_higher_is_better(s.promote.higher_is_better);
      p->set_margin(s.promote.margin);
      p->set_production_eval_step(s.promote.production_eval_step);
    }
  }
  return run;
}

Principal PrincipalOf(const pb::UserRecord& user) {
  Principal who;
  who.user = user.name();
  who.cluster_admin = user.cluster_admin();
  for (const auto& [team, role] : user.teams()) who.teams[team] = role;
  return who;
}

}  // namespace

// The coordinator side of the manager: jobs through the normal submit path, outcomes from the store.
class Coordinator::PipelineJobs : public PipelineHost {
 public:
  explicit PipelineJobs(Coordinator* core) : core_(core) {}

  StatusOr<StartedStepJob> StartStepJob(const pb::PipelineRunRecord& run, const pb::PipelineStepRecord& step,
                                        const std::string& spec_yaml,
                                        const std::vector<std::string>& overrides) override {
    const pb::UserRecord* user = core_->identity_.FindUser(run.owner());
    if (user == nullptr)
      return PermissionDeniedError(fmt::format("the run's owner '{}' no longer exists", run.owner()));
    const Principal owner = PrincipalOf(*user);
    RETURN_IF_ERROR(RequireTeamRole(owner, pb::ROLE_MEMBER, run.team(), "submit jobs to"));
    const std::string source = fmt::format("{} step '{}'", run.pipeline_id(), step.name());
    ASSIGN_OR_RETURN(jobspec::JobSpec spec, jobspec::ParseJobSpec(spec_yaml, source, overrides, {.open_files = false}));
    pb::ClientRequest request;
    pb::SubmitJobRequest* submit = request.mutable_submit();
    submit->set_spec_yaml(spec_yaml);
    for (const auto& o : overrides) submit->add_overrides(o);
    const std::string output_dir = RunOutputDir(spec.train.output_dir, run.pipeline_id());
    if (output_dir != spec.train.output_dir) {
      submit->add_overrides("output_dir=" + output_dir);
      // An export job's export_dir is its output_dir: both move into the run's directory.
      if (spec.kind == jobspec::JobKind::kExport) submit->add_overrides("export_dir=" + output_dir);
    }
    submit->set_team(run.team());
    submit->set_name(spec.scheduling.name.empty() ? fmt::format("{}.{}", run.pipeline_id(), step.name())
                                                  : spec.scheduling.name);
    const PreparedSubmit prepared =
        PrepareSubmit("", std::move(request), owner, run.team(), core_->options_.path_policy.get());
    if (!prepared.status.ok()) return prepared.status;
    std::vector<std::string> warnings;
    ASSIGN_OR_RETURN(Job * job, core_->SubmitPrepared(prepared, &warnings));
    job->record.set_pipeline_id(run.pipeline_id());
    job->record.set_pipeline_step(step.name());
    core_->jobs_.MarkChanged(*job);
    core_->jobs_.AddEvent(*job, "message", fmt::format("step '{}' of pipeline run {}", step.name(), run.pipeline_id()));
    core_->audit_.Append({.user = owner.user,
                          .team = run.team(),
                          .operation = "pipeline.step",
                          .target = job->record.job_id(),
                          .message = fmt::format("step '{}' of {}", step.name(), run.pipeline_id())},
                         Status::Ok());
    return StartedStepJob{job->record.job_id(), job->record.output_dir()};
  }

  std::optional<StepJobOutcome> JobOutcome(const std::string& job_id) override {
    if (core_->jobs_.Find(job_id) != nullptr) return std::nullopt;  // running, or its end is not committed yet
    StepJobOutcome out;
    auto record = core_->jobs_.GetRecord(job_id);
    if (!record.ok()) {
      out.state = pb::JOB_FAILED;
      out.result = record.status().message();
      return out;
    }
    if (!protocol::IsTerminal(record->state())) return std::nullopt;
    out.state = record->state();
    out.output_dir = record->output_dir();
    out.result = record->result();
    Status scanned = core_->store_->ScanRecords<pb::MetricPoint>(
        Table::kMetrics, storage::IdPrefix(job_id), [&](const pb::MetricPoint& point) {
          for (const auto& [key, value] : point.values()) out.metrics[key] = value;  // in step order: last wins
          return true;
        });
    if (!scanned.ok()) spdlog::warn("reading the metrics of job {}: {}", job_id, scanned.ToString());
    return out;
  }

  void CancelJob(const std::string& job_id, const std::string& reason) override {
    Job* job = core_->jobs_.Find(job_id);
    if (job == nullptr || protocol::IsTerminal(job->record.state())) return;
    core_->jobs_.AddEvent(*job, "message", reason);
    core_->Reconcile(*job, JobReport::kCancelRequested);
  }

  StatusOr<std::string> ProductionPath(const std::string& team, const std::string& model) override {
    return core_->PipelineProductionPath(team, model);
  }
  StatusOr<PromoteOutcome> Promote(const pb::PipelineRunRecord& run, const pb::PipelineStepRecord& step) override {
    return core_->PipelinePromote(run, step);
  }

 private:
  Coordinator* core_;
};

std::unique_ptr<PipelineHost> Coordinator::MakePipelineHost(Coordinator* core) {
  return std::make_unique<PipelineJobs>(core);
}

StatusOr<std::string> Coordinator::CreatePipelineRun(const std::string& yaml, const std::string& team,
                                                     const Principal& owner,
                                                     const std::map<std::string, std::string>& overrides,
                                                     const std::string& origin) {
  auto created = ValidatePipelineRun(yaml, team, owner, overrides);
  if (created.ok()) created->set_pipeline_id(pipelines_.NextId());  // only a run that is created takes an id
  const std::string target = created.ok() ? created->pipeline_id() : "";
  audit_.Append({.user = owner.user, .team = team, .operation = "pipeline.submit", .target = target, .message = origin},
                created.status());
  if (!created.ok()) return created.status();
  created->set_team(team);
  created->set_owner(owner.user);
  created->set_origin(origin);
  created->set_yaml(yaml);
  for (const auto& [key, value] : overrides) (*created->mutable_overrides())[key] = value;
  pipelines_.Create(std::move(*created));
  spdlog::info("pipeline run {} created by {} in team {} ({})", target, owner.user, team, origin);
  return target;
}

StatusOr<pb::PipelineRunRecord> Coordinator::ValidatePipelineRun(const std::string& yaml, const std::string& team,
                                                                 const Principal& owner,
                                                                 const std::map<std::string, std::string>& overrides) {
  if (identity_.FindTeam(team) == nullptr) {
    return NotFoundError(fmt::format("no team '{}' (anneal team ls lists them)", team));
  }
  RETURN_IF_ERROR(RequireTeamRole(owner, pb::ROLE_MEMBER, team, "run pipelines in"));
  if (yaml.size() > options_.limits.max_spec_bytes) {
    return InvalidArgumentError(
        fmt::format("the pipeline YAML is {} bytes, above the limit of {} bytes "
                    "(max_spec_bytes)",
                    yaml.size(), options_.limits.max_spec_bytes));
  }
  ASSIGN_OR_RETURN(jobspec::PipelineSpec spec, jobspec::ParsePipeline(yaml, "pipeline", overrides));
  const std::string run_id = pipelines_.PeekNextId();
  auto production = [&](const std::string& model) { return PipelineProductionPath(team, model); };
  std::map<std::string, std::string> output_dirs;
  for (const jobspec::PipelineStep* step : jobspec::TopologicalOrder(spec)) {
    if (step->kind == jobspec::StepKind::kPromote) continue;
    const std::string where = fmt::format("step '{}'", step->name);
    ASSIGN_OR_RETURN(SubmitValues values, StandInValues(*step, run_id, output_dirs, production));
    const std::string text = jobspec::SubstituteReferences(step->job_yaml, values.values);
    auto job = jobspec::ParseJobSpec(text, fmt::format("pipeline step '{}' job", step->name), step->overrides,
                                     {.open_files = false});
    if (!job.ok()) return job.status().WithContext(where);
    if (jobspec::JobKindName(job->kind) != jobspec::StepKindName(step->kind)) {
      return InvalidArgumentError(fmt::format("{}: the job spec's kind is {} but the step is a {} step", where,
                                              jobspec::JobKindName(job->kind), jobspec::StepKindName(step->kind)));
    }
    job->train.output_dir = RunOutputDir(job->train.output_dir, run_id);
    if (job->kind == jobspec::JobKind::kExport) job->export_.dir = job->train.output_dir;
    output_dirs[step->name] = job->train.output_dir;
    if (options_.path_policy != nullptr && !values.model_unresolved) {
      if (Status paths = jobspec::CheckSpecPaths(*job, team, *options_.path_policy); !paths.ok()) {
        return paths.WithContext(where + ": refused by the path policy");
      }
    }
  }
  return NewRunRecord(spec);  // no id yet: validating (a schedule's create) uses none up
}

bool Coordinator::PipelineRunActive(const std::string& run_id) const {
  return pipelines_.FindActive(run_id) != nullptr;
}

Status Coordinator::CancelPipelineRun(const std::string& run_id, const std::string& reason) {
  return pipelines_.Cancel(run_id, reason).status();
}

StatusOr<pb::PipelineRunRecord> Coordinator::GetPipelineRun(const std::string& run_id) const {
  return pipelines_.Get(run_id);
}

StatusOr<std::vector<pb::PipelineRunRecord>> Coordinator::RecentPipelineRuns(size_t limit) const {
  return pipelines_.List(/*include_ended=*/true, limit, [](const pb::PipelineRunRecord&) { return true; });
}

}  // namespace anneal::coordinator
