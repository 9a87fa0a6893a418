// Jobs: SubmitJob, CancelJob, applying NextTransition's decisions (coordinator/job_state_machine.h) after a
// job's tasks changed, and the stop deadlines of gangs being torn down.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/sharing.h"
#include "jobspec/jobspec.h"
#include "protocol/states.h"

namespace anneal::coordinator {

PreparedSubmit PrepareSubmit(std::string peer, pb::ClientRequest request, Principal submitter, std::string team,
                             const jobspec::PathPolicy* policy) {
  PreparedSubmit prepared;
  prepared.peer = std::move(peer);
  prepared.submitter = std::move(submitter);
  prepared.team = std::move(team);
  const pb::SubmitJobRequest& submit = request.submit();
  std::vector<std::string> overrides(submit.overrides().begin(), submit.overrides().end());
  // The coordinator never opens a file a submitted spec names (a `deepspeed` JSON is read by anneal submit).
  auto spec = jobspec::ParseJobSpec(submit.spec_yaml(), "submitted job spec", overrides, {.open_files = false});
  Status paths =
      !spec.ok() || policy == nullptr ? Status::Ok() : jobspec::CheckSpecPaths(*spec, prepared.team, *policy);
  if (!spec.ok()) {
    prepared.status = spec.status();
  } else if (!paths.ok()) {
    prepared.status = paths.WithContext("refused by the path policy");
  } else {
    if (!submit.name().empty()) spec->scheduling.name = submit.name();
    prepared.resolved_yaml = jobspec::ToYaml(*spec);
    prepared.spec = std::make_shared<const jobspec::JobSpec>(std::move(*spec));
  }
  prepared.request = std::move(request);
  return prepared;
}

namespace {

pb::JobRecord NewJobRecord(const PreparedSubmit& prepared) {
  const jobspec::JobSpec& spec = *prepared.spec;
  pb::JobRecord r;
  r.set_name(spec.scheduling.name);  // the job id when empty (JobTable::Submit)
  r.set_kind(spec.kind == jobspec::JobKind::kEval     ? pb::JOB_EVAL
             : spec.kind == jobspec::JobKind::kExport ? pb::JOB_EXPORT
             : spec.kind == jobspec::JobKind::kClean  ? pb::JOB_CLEAN
                                                      : pb::JOB_TRAIN);
  r.set_spec_yaml(prepared.resolved_yaml);
  r.set_submitted_spec_yaml(prepared.request.submit().spec_yaml());
  auto* res = r.mutable_resources();
  res->set_nodes(spec.resources.nodes);
  res->set_gpus_per_node(spec.resources.gpus_per_node);
  res->set_world_size(spec.resources.world_size());
  res->set_tensor_parallel(spec.resources.tensor_parallel);
  res->set_pipeline_parallel(spec.resources.pipeline_parallel);
  res->set_data_parallel(spec.resources.data_parallel());
  r.set_priority(spec.scheduling.priority);
  r.set_max_attempts(std::max(1, spec.scheduling.max_attempts));
  CopySchedulingKeys(spec, &r);  // time_limit, node_selector, max_preemptions, max_infra_restarts
  r.set_output_dir(spec.train.output_dir);
  r.set_owner(prepared.submitter.user);
  r.set_team(prepared.team);
  return r;
}

}  // namespace

std::optional<Coordinator::SubmitTicket> Coordinator::AdmitSubmit(const std::string& peer,
                                                                  const pb::ClientRequest& request) {
  if (Status st = WithinLimits(request); !st.ok()) {
    ReplyError(peer, request.request_id(), st);
    return std::nullopt;
  }
  auto who = AuthenticateClient(peer, request);
  if (!who) return std::nullopt;
  auto team = ResolveSubmitTeam(*who, request.submit().team());
  Status allowed = team.status();
  if (team.ok() && identity_.FindTeam(*team) == nullptr) {
    allowed = NotFoundError(fmt::format("no team '{}' (anneal team ls lists them)", *team));
  }
  if (allowed.ok()) allowed = RequireTeamRole(*who, pb::ROLE_MEMBER, *team, "submit jobs to");
  if (!allowed.ok()) {
    AuditAndReply(*who, peer, request, team.ok() ? *team : request.submit().team(), request.submit().name(), allowed,
                  {});
    return std::nullopt;
  }
  return SubmitTicket{std::move(*who), std::move(*team)};
}

void Coordinator::HandleSubmit(const PreparedSubmit& prepared) {
  const pb::ClientRequest& request = prepared.request;
  std::vector<std::string> warnings;
  auto job = SubmitPrepared(prepared, &warnings);
  if (!job.ok()) {
    AuditAndReply(prepared.submitter, prepared.peer, request, prepared.team, request.submit().name(), job.status(), {});
    return;
  }
  pb::ClientReply reply;
  reply.set_request_id(request.request_id());
  reply.mutable_submit()->set_job_id((*job)->record.job_id());
  for (auto& w : warnings) reply.mutable_submit()->add_warnings(w);
  AuditAndReply(prepared.submitter, prepared.peer, request, prepared.team, (*job)->record.job_id(), Status::Ok(),
                std::move(reply), fmt::format("submitted '{}'", (*job)->record.name()));
}

StatusOr<Job*> Coordinator::SubmitPrepared(const PreparedSubmit& prepared, std::vector<std::string>* warnings) {
  if (!prepared.status.ok()) return prepared.status;
  RETURN_IF_ERROR(CheckNameLength("the job name (scheduling.name)", prepared.spec->scheduling.name, options_.limits));
  *warnings = prepared.spec->warnings;
  if (nodes_.empty()) {
    warnings->push_back("no node has registered yet: the job's fit to the cluster is checked when nodes join");
  } else if (Status fit = jobspec::CheckFitsCluster(*prepared.spec, nodes_.Shape()); !fit.ok()) {
    return fit.WithContext("the cluster can never run this job");
  }
  if (!options_.artifacts.shared_filesystem) {  // inputs staged from one node (coordinator/artifacts.h)
    RETURN_IF_ERROR(CheckStageable(*prepared.spec, options_.artifacts.default_source));
    const std::string source = StageSource(*prepared.spec, options_.artifacts.default_source);
    if (nodes_.Find(source) == nullptr) {
      warnings->push_back(
          fmt::format("stage_from node '{}' has not registered: the job's inputs are copied from it "
                      "when it starts, and fail then if it is still unknown",
                      source));
    }
  }
  // Two jobs never write one output directory (nor one inside the other): the second is refused here, and
  // the agents' output lock (docs/agent.md) refuses what this cannot see (a stale attempt of the same job).
  const std::string output_key = OutputDirKey(prepared.spec->train.output_dir);
  if (const std::string holder = OutputDirHolder(output_key); !holder.empty()) {
    const Job* other = jobs_.Find(holder);
    return FailedPreconditionError(
        fmt::format("output_dir {} overlaps the output directory {} of active job {} ({}): two jobs never write one "
                    "directory; choose another output_dir, or wait for {} to end (anneal cancel {} stops it)",
                    prepared.spec->train.output_dir, other->record.output_dir(), holder,
                    protocol::StateName(other->record.state()), holder, holder));
  }
  // Nor overwrites a registered model version (coordinator/model_registry.h).
  RETURN_IF_ERROR(models_.CheckOutputDir(output_key));
  Job& job = jobs_.Submit(NewJobRecord(prepared));
  output_dirs_[output_key] = job.record.job_id();
  checkpoints_.Track(job.record.job_id(), jobspec::RetentionPolicy::Of(prepared.spec->train));
  return &job;
}

std::string Coordinator::OutputDirKey(const std::string& dir) {
  std::string key = std::filesystem::path(dir).lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  return key;
}

std::string Coordinator::OutputDirHolder(const std::string& output_dir) {
  auto active = [&](std::map<std::string, std::string>::iterator it) {
    const Job* job = jobs_.Find(it->second);
    if (job != nullptr && !protocol::IsTerminal(job->record.state()) &&
        OutputDirKey(job->record.output_dir()) == it->first) {
      return true;
    }
    output_dirs_.erase(it);  // that job ended (or was forgotten): the directory is free
    return false;
  };
  // The directory itself and every directory above it.
  for (std::filesystem::path p(output_dir); !p.empty(); p = p.parent_path()) {
    if (auto it = output_dirs_.find(p.string()); it != output_dirs_.end()) {
      const std::string job = it->second;
      if (active(it)) return job;
    }
    if (p == p.parent_path()) break;
  }
  // Directories below it.
  const std::string prefix = output_dir == "/" ? "/" : output_dir + "/";
  for (auto it = output_dirs_.lower_bound(prefix); it != output_dirs_.end() && it->first.rfind(prefix, 0) == 0;) {
    auto next = std::next(it);
    const std::string job = it->second;
    if (active(it)) return job;
    it = next;
  }
  return "";
}

void Coordinator::HandleCancel(const Principal& who, const std::string& peer, uint64_t request_id,
                               const pb::CancelJobRequest& request) {
  pb::ClientRequest audited;
  audited.set_request_id(request_id);
  *audited.mutable_cancel() = request;
  auto record = jobs_.GetRecord(request.job_id());
  Status allowed = record.status();
  const std::string team = record.ok() ? JobTeam(*record) : "";
  if (allowed.ok()) allowed = RequireTeamRole(who, pb::ROLE_MEMBER, team, "cancel jobs of");
  pb::ClientReply reply;
  reply.set_request_id(request_id);
  Job* job = allowed.ok() ? jobs_.Find(request.job_id()) : nullptr;
  if (allowed.ok() && job == nullptr) {
    reply.mutable_cancel()->set_state(record->state());  // already ended: cancelling is a no-op
  } else if (allowed.ok()) {
    Reconcile(*job, JobReport::kCancelRequested);
    reply.mutable_cancel()->set_state(job->record.state());
  }
  AuditAndReply(who, peer, audited, team, request.job_id(), allowed, std::move(reply),
                allowed.ok() ? fmt::format("now {}", pb::JobState_Name(reply.cancel().state())) : "");
}

void Coordinator::Reconcile(Job& job, JobReport report) {
  pb::JobRecord& r = job.record;
  for (;;) {
    const pb::CheckpointRecord* latest = checkpoints_.LatestCommitted(r.job_id());
    const JobView view = ViewOf(r, latest == nullptr ? "" : latest->path());
    const Decision decision = NextTransition(view, report);
    if (decision.next == pb::JOB_STATE_UNSPECIFIED) return;
    if (decision.result) r.set_result(*decision.result);
    if (decision.action == JobAction::kRetry || decision.action == JobAction::kRequeue ||
        decision.action == JobAction::kInfraRetry) {
      ReleaseDisconnectedTasks(job, decision.message);
      r.set_resume_checkpoint(view.resume_checkpoint);
      r.clear_task_states();
      job.task_last_seen_ms.clear();
    }
    if (decision.action == JobAction::kRequeue) r.set_preemptions(r.preemptions() + 1);
    if (decision.action == JobAction::kInfraRetry) r.set_infra_restarts(r.infra_restarts() + 1);
    if (decision.next != pb::JOB_PREEMPTED) r.set_preempt_deadline_ms(0);
    jobs_.Transition(job, decision.next, decision.message);
    if (decision.action == JobAction::kStopGang || decision.action == JobAction::kPreemptGang) {
      // A task kept on a DOWN node can take no stop order: it counts as lost now (after the transition, so the
      // attempt's result stays the failure that stopped it), and the gang does not wait a stop timeout for it
      // (its ranks cannot go on without their peers; a returning node stops them as stale).
      ReleaseDisconnectedTasks(job, decision.message);
    }
    if (decision.action == JobAction::kStopGang) {
      StopGang(job, decision.stop_reason);
      job.stop_deadline_ms = clock_->NowMs() + options_.stop_timeout_ms;
    }
    if (decision.action == JobAction::kPreemptGang) {
      // The agents kill what has not stopped at the grace deadline; an unreachable node's task counts as ended
      // a stop timeout later (CheckStopDeadlines), so a lost node cannot hold the slots forever.
      const int64_t now = clock_->NowMs();
      r.set_preempt_deadline_ms(now + options_.preemption_grace_ms);
      PreemptGang(job);
      job.stop_deadline_ms = now + options_.preemption_grace_ms + options_.stop_timeout_ms;
    }
    report = JobReport::kTasksChanged;
  }
}

void Coordinator::StopGang(Job& job, const std::string& reason) {
  for (const auto& [node_id, state] : job.record.task_states()) {
    if (protocol::TaskEnded(state)) continue;
    if (const Node* node = nodes_.Find(node_id)) SendStop(*node, job.record.job_id(), job.record.epoch(), reason);
  }
}

void Coordinator::PreemptGang(Job& job) {
  pb::CoordinatorToAgent message;
  pb::PreemptTask* preempt = message.mutable_preempt();
  preempt->set_job_id(job.record.job_id());
  preempt->set_epoch(job.record.epoch());
  preempt->set_grace_ms(static_cast<uint32_t>(options_.preemption_grace_ms));
  preempt->set_reason(job.record.preempt_reason());
  for (const auto& [node_id, state] : job.record.task_states()) {
    if (protocol::TaskEnded(state)) continue;
    if (const Node* node = nodes_.Find(node_id)) SendToNode(*node, message);
  }
}

void Coordinator::SetTaskState(Job& job, const std::string& node_id, pb::TaskState state) {
  if (!jobs_.SetTaskState(job, node_id, state)) return;
  nodes_.ReleaseTask(job.record, node_id);  // the task ended: its slots and port are free
  schedule_dirty_ = true;
}

void Coordinator::CheckStopDeadlines() {
  const int64_t now = clock_->NowMs();
  for (auto& [id, job] : jobs_.all()) {
    if (job.stop_deadline_ms == 0 || now < job.stop_deadline_ms) continue;
    job.stop_deadline_ms = 0;
    const auto tasks = job.record.task_states();  // a copy: SetTaskState changes the map
    for (const auto& [node_id, state] : tasks) {
      if (protocol::TaskEnded(state)) continue;
      const Node* node = nodes_.Find(node_id);
      if (node == nullptr || node->record.state() == pb::NODE_DOWN) {  // gone, not slow: an infrastructure fault
        LoseTask(job, node_id,
                 fmt::format("node {} is down and did not confirm the stop within {} ms: task lost", node_id,
                             options_.stop_timeout_ms));
        continue;
      }
      jobs_.AddEvent(job, "error",
                     fmt::format("node {} did not confirm the stop within {} ms; its slots are released", node_id,
                                 options_.stop_timeout_ms));
      SetTaskState(job, node_id, pb::TASK_STOPPED);
    }
    Reconcile(job);
  }
}

}  // namespace anneal::coordinator
