// Jobs: submit, cancel, the state machine's transitions (each with its event, in this round's batch),
// reconciliation after task changes, and the scheduling pass.
#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/coordinator.h"
#include "coordinator/job_state_machine.h"
#include "coordinator/store_keys.h"
#include "jobspec/jobspec.h"
#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

namespace {

bool IsFailureLike(pb::TaskState state) {
  return state == pb::TASK_FAILED || state == pb::TASK_STOPPED || state == pb::TASK_LOST;
}

}  // namespace

PreparedSubmit PrepareSubmit(std::string peer, pb::ClientRequest request) {
  PreparedSubmit prepared;
  prepared.peer = std::move(peer);
  const pb::SubmitJobRequest& submit = request.submit();
  std::vector<std::string> overrides(submit.overrides().begin(), submit.overrides().end());
  auto spec = jobspec::ParseJobSpec(submit.spec_yaml(), "submitted job spec", overrides);
  if (!spec.ok()) {
    prepared.status = spec.status();
  } else {
    if (!submit.name().empty()) spec->scheduling.name = submit.name();
    prepared.resolved_yaml = jobspec::ToYaml(*spec);
    prepared.spec = std::make_shared<const jobspec::JobSpec>(std::move(*spec));
  }
  prepared.request = std::move(request);
  return prepared;
}

void Coordinator::HandleSubmit(const PreparedSubmit& prepared) {
  const std::string& peer = prepared.peer;
  const uint64_t request_id = prepared.request.request_id();
  const pb::SubmitJobRequest& request = prepared.request.submit();
  if (!prepared.status.ok()) {
    ReplyError(peer, request_id, prepared.status);
    return;
  }
  const jobspec::JobSpec* spec = prepared.spec.get();
  std::vector<std::string> warnings = spec->warnings;
  if (nodes_.empty()) {
    warnings.push_back("no node has registered yet: the job's fit to the cluster is checked when nodes join");
  } else {
    jobspec::ClusterShape shape;
    for (const auto& [id, node] : nodes_) {
      const int slots = static_cast<int>(node.record.inventory().slots());
      ++shape.node_count;
      shape.max_slots_per_node = std::max(shape.max_slots_per_node, slots);
      shape.total_slots += slots;
    }
    if (Status fit = jobspec::CheckFitsCluster(*spec, shape); !fit.ok()) {
      ReplyError(peer, request_id, fit.WithContext("the cluster can never run this job"));
      return;
    }
  }

  const uint64_t number = next_job_number_++;
  batch_.PutU64(Table::kMeta, kNextJobKey, next_job_number_);
  JobRuntime job;
  pb::JobRecord& r = job.record;
  r.set_job_id(fmt::format("job-{:06d}", number));
  r.set_name(spec->scheduling.name.empty() ? r.job_id() : spec->scheduling.name);
  r.set_kind(spec->kind == jobspec::JobKind::kEval ? pb::JOB_EVAL : pb::JOB_TRAIN);
  r.set_spec_yaml(prepared.resolved_yaml);
  r.set_submitted_spec_yaml(request.spec_yaml());
  auto* res = r.mutable_resources();
  res->set_nodes(spec->resources.nodes);
  res->set_gpus_per_node(spec->resources.gpus_per_node);
  res->set_world_size(spec->resources.world_size());
  res->set_tensor_parallel(spec->resources.tensor_parallel);
  res->set_pipeline_parallel(spec->resources.pipeline_parallel);
  res->set_data_parallel(spec->resources.data_parallel());
  r.set_priority(spec->scheduling.priority);
  r.set_max_attempts(std::max(1, spec->scheduling.max_attempts));
  r.set_submitted_at_ms(clock_->NowMs());
  r.set_output_dir(spec->train.output_dir);
  r.set_owner("admin");
  r.set_submit_seq(number);
  r.set_next_event_seq(1);
  job.retention = jobspec::RetentionPolicy::Of(spec->train);
  const std::string id = r.job_id();
  JobRuntime& stored = jobs_.emplace(id, std::move(job)).first->second;
  Transition(stored, pb::JOB_PENDING, "submitted");

  pb::ClientReply reply;
  reply.set_request_id(request_id);
  reply.mutable_submit()->set_job_id(id);
  for (auto& w : warnings) reply.mutable_submit()->add_warnings(w);
  Reply(peer, std::move(reply));
}

void Coordinator::HandleCancel(const std::string& peer, uint64_t request_id, const pb::CancelJobRequest& request) {
  pb::ClientReply reply;
  reply.set_request_id(request_id);
  auto it = jobs_.find(request.job_id());
  if (it == jobs_.end() || IsTerminal(it->second.record.state())) {
    auto record = GetJobRecord(request.job_id());
    if (!record.ok()) {
      ReplyError(peer, request_id, record.status());
      return;
    }
    reply.mutable_cancel()->set_state(record->state());  // already ended: cancelling is a no-op
    Reply(peer, std::move(reply));
    return;
  }
  JobRuntime& job = it->second;
  if (job.record.state() != pb::JOB_CANCELLING) {
    Transition(job, pb::JOB_CANCELLING, "cancel requested");
    job.record.set_result("cancelled");
    StopGang(job, "job cancelled");
    job.stop_deadline_ms = clock_->NowMs() + options_.stop_timeout_ms;
    Reconcile(job);
  }
  reply.mutable_cancel()->set_state(job.record.state());
  Reply(peer, std::move(reply));
}

void Coordinator::Transition(JobRuntime& job, pb::JobState to, const std::string& message) {
  pb::JobRecord& r = job.record;
  const pb::JobState from = r.state();
  ANNEAL_CHECK(IsAllowedTransition(from, to));
  const int64_t now = clock_->NowMs();
  pb::JobEvent event;
  event.set_job_id(r.job_id());
  event.set_seq(std::max<uint64_t>(r.next_event_seq(), 1));
  event.set_time_ms(now);
  event.set_from_state(from);
  event.set_to_state(to);
  event.set_attempt(r.attempt());
  event.set_epoch(r.epoch());
  event.set_kind("state");
  event.set_message(message);
  r.set_next_event_seq(event.seq() + 1);
  batch_.Put(Table::kEvents, storage::JobStepKey(r.job_id(), event.seq()), event);
  spdlog::info("job {}: {} -> {} ({})", r.job_id(), JobStateName(from), JobStateName(to), message);

  const QueueKey key{-static_cast<int64_t>(r.priority()), r.submit_seq(), r.job_id()};
  if (from == pb::JOB_PENDING) queue_.erase(key);
  if (to == pb::JOB_PENDING) {
    queue_.insert(key);
    schedule_dirty_ = true;
  }
  r.set_state(to);
  if (to == pb::JOB_RUNNING && r.started_at_ms() == 0) r.set_started_at_ms(now);
  if (from == pb::JOB_STATE_UNSPECIFIED) batch_.PutRaw(Table::kMeta, ActiveKey(r.job_id()), "");
  if (IsTerminal(to)) {
    r.set_finished_at_ms(now);
    job.stop_deadline_ms = 0;
    batch_.Delete(Table::kMeta, ActiveKey(r.job_id()));
    to_erase_.push_back(r.job_id());
  }
  if (to != pb::JOB_RESTARTING && to != pb::JOB_CANCELLING) job.stop_deadline_ms = 0;
  PersistJob(job);
}

void Coordinator::AddEvent(JobRuntime& job, const std::string& kind, const std::string& message) {
  pb::JobRecord& r = job.record;
  pb::JobEvent event;
  event.set_job_id(r.job_id());
  event.set_seq(std::max<uint64_t>(r.next_event_seq(), 1));
  event.set_time_ms(clock_->NowMs());
  event.set_from_state(r.state());
  event.set_to_state(r.state());
  event.set_attempt(r.attempt());
  event.set_epoch(r.epoch());
  event.set_kind(kind);
  event.set_message(message);
  r.set_next_event_seq(event.seq() + 1);
  batch_.Put(Table::kEvents, storage::JobStepKey(r.job_id(), event.seq()), event);
  PersistJob(job);
}

// Marks the record for this round's batch: Flush serializes each changed job once, however many times it changed.
void Coordinator::PersistJob(const JobRuntime& job) {
  dirty_jobs_.insert(job.record.job_id());
  changed_jobs_.insert(job.record.job_id());
}

void Coordinator::SetTaskState(JobRuntime& job, const std::string& node_id, pb::TaskState state) {
  auto& tasks = *job.record.mutable_task_states();
  auto it = tasks.find(node_id);
  if (it == tasks.end() || IsTaskEnded(it->second) || it->second == state) return;
  it->second = state;
  job.task_last_seen_ms[node_id] = clock_->NowMs();
  if (IsTaskEnded(state)) ReleaseTask(job, node_id);
  PersistJob(job);
}

void Coordinator::Reconcile(JobRuntime& job) {
  pb::JobRecord& r = job.record;
  size_t total = 0, up = 0, succeeded = 0, ended = 0;
  std::string failed_node;
  for (const auto& [node, state] : r.task_states()) {
    ++total;
    if (state == pb::TASK_RUNNING || state == pb::TASK_SUCCEEDED) ++up;
    if (state == pb::TASK_SUCCEEDED) ++succeeded;
    if (IsTaskEnded(state)) ++ended;
    if (IsFailureLike(state) && failed_node.empty()) failed_node = node;
  }
  switch (r.state()) {
    case pb::JOB_STARTING:
    case pb::JOB_RUNNING:
      if (!failed_node.empty()) {
        FailAttempt(job, r.result().empty() ? fmt::format("the task on node {} ended", failed_node) : r.result());
        return;
      }
      if (r.state() == pb::JOB_STARTING && total > 0 && up == total) {
        Transition(job, pb::JOB_RUNNING, fmt::format("all {} task(s) running", total));
      }
      if (r.state() == pb::JOB_RUNNING && total > 0 && succeeded == total) {
        r.set_result(r.output_dir().empty() ? "succeeded" : "output in " + r.output_dir());
        Transition(job, pb::JOB_SUCCEEDED, "every task exited 0");
      }
      return;
    case pb::JOB_RESTARTING:
      if (ended < total) return;
      if (r.attempt() < r.max_attempts()) {
        ResumeFromLatestCheckpoint(job);
        r.clear_task_states();
        job.task_last_seen_ms.clear();
        const std::string from = r.resume_checkpoint().empty() ? "from the start"
                                                               : "from " + r.resume_checkpoint();
        Transition(job, pb::JOB_PENDING, fmt::format("retrying (attempt {} of {} failed: {}); resuming {}",
                                                     r.attempt(), r.max_attempts(), r.result(), from));
      } else {
        Transition(job, pb::JOB_FAILED, fmt::format("no attempts left ({} of {}): {}", r.attempt(),
                                                    r.max_attempts(), r.result()));
      }
      return;
    case pb::JOB_CANCELLING:
      if (ended == total) Transition(job, pb::JOB_CANCELLED, "every task stopped");
      return;
    default:
      return;
  }
}

void Coordinator::FailAttempt(JobRuntime& job, const std::string& reason) {
  job.record.set_result(reason);
  Transition(job, pb::JOB_RESTARTING, reason);
  StopGang(job, reason);
  job.stop_deadline_ms = clock_->NowMs() + options_.stop_timeout_ms;
  Reconcile(job);
}

void Coordinator::StopGang(JobRuntime& job, const std::string& reason) {
  for (const auto& [node_id, state] : job.record.task_states()) {
    if (IsTaskEnded(state)) continue;
    auto it = nodes_.find(node_id);
    if (it != nodes_.end()) SendStop(it->second, job.record.job_id(), job.record.epoch(), reason);
  }
}

void Coordinator::ReleaseTask(const JobRuntime& job, const std::string& node_id) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  const pb::Placement& placement = job.record.placement();
  for (int i = 0; i < placement.nodes_size(); ++i) {
    if (placement.nodes(i).node_id() != node_id) continue;
    for (const auto& rank : placement.nodes(i).ranks()) it->second.used_slots.erase(rank.slot());
    if (i == 0) it->second.used_ports.erase(placement.master_port());
    it->second.task_jobs.erase(job.record.job_id());
  }
  schedule_dirty_ = true;
}

void Coordinator::ReserveTasks(const JobRuntime& job) {
  const pb::Placement& placement = job.record.placement();
  for (int i = 0; i < placement.nodes_size(); ++i) {
    const std::string& node_id = placement.nodes(i).node_id();
    auto task = job.record.task_states().find(node_id);
    if (task == job.record.task_states().end() || IsTaskEnded(task->second)) continue;
    auto it = nodes_.find(node_id);
    if (it == nodes_.end()) continue;
    for (const auto& rank : placement.nodes(i).ranks()) it->second.used_slots.insert(rank.slot());
    if (i == 0) it->second.used_ports.insert(placement.master_port());
    it->second.task_jobs.insert(job.record.job_id());
  }
}

void Coordinator::CheckStopDeadlines() {
  const int64_t now = clock_->NowMs();
  for (auto& [id, job] : jobs_) {
    if (job.stop_deadline_ms == 0 || now < job.stop_deadline_ms) continue;
    job.stop_deadline_ms = 0;
    const auto tasks = job.record.task_states();  // a copy: SetTaskState changes the map
    for (const auto& [node_id, state] : tasks) {
      if (IsTaskEnded(state)) continue;
      AddEvent(job, "error", fmt::format("node {} did not confirm the stop within {} ms; its slots are released",
                                         node_id, options_.stop_timeout_ms));
      SetTaskState(job, node_id, pb::TASK_STOPPED);
    }
    Reconcile(job);
  }
}

void Coordinator::ResumeFromLatestCheckpoint(JobRuntime& job) {
  if (const auto* latest = LatestCommittedCheckpoint(job)) job.record.set_resume_checkpoint(latest->path());
}

Status Coordinator::LoadJob(const pb::JobRecord& record) {
  JobRuntime job;
  job.record = record;
  auto spec = jobspec::ParseJobSpec(record.spec_yaml(), "stored spec of " + record.job_id());
  if (spec.ok()) {
    job.retention = jobspec::RetentionPolicy::Of(spec->train);
  } else {
    spdlog::warn("job {}: stored spec no longer parses ({}); checkpoint retention keeps everything",
                 record.job_id(), spec.status().ToString());
  }
  ASSIGN_OR_RETURN(auto checkpoints, ReadCheckpoints(record.job_id()));
  for (auto& c : checkpoints) job.checkpoints.emplace(c.step(), std::move(c));
  ASSIGN_OR_RETURN(auto last_metric, store_->LastKeyWithPrefix(Table::kMetrics, storage::IdPrefix(record.job_id())));
  if (last_metric) {
    if (auto decoded = storage::DecodeJobStepKey(*last_metric)) job.last_metric_step = decoded->second;
  }
  const int64_t now = clock_->NowMs();
  for (const auto& [node_id, state] : record.task_states()) job.task_last_seen_ms[node_id] = now;
  if (record.state() == pb::JOB_RESTARTING || record.state() == pb::JOB_CANCELLING) {
    job.stop_deadline_ms = now + options_.stop_timeout_ms;
  }
  if (record.state() == pb::JOB_PENDING) {
    queue_.insert({-static_cast<int64_t>(record.priority()), record.submit_seq(), record.job_id()});
  }
  jobs_.emplace(record.job_id(), std::move(job));
  return Status::Ok();
}

}  // namespace anneal::coordinator
