// Coordinator lifecycle: recovery from the store, the Tick/Flush round, dispatch, introspection.
#include "coordinator/coordinator.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "protocol/states.h"

namespace anneal::coordinator {

Coordinator::Coordinator(CoordinatorOptions options, storage::StateStore* store, Clock* clock)
    : options_(std::move(options)),
      store_(store),
      clock_(clock),
      jobs_(&batch_, store, clock),
      nodes_(&batch_, store, clock, {options_.default_port_begin, options_.default_port_end}, options_.agent_limits),
      checkpoints_(&batch_, store),
      identity_(&batch_, store, clock),
      audit_(&batch_, store, clock, options_.audit_max_records),
      join_tokens_(&batch_, store, clock),
      usage_(&batch_, store, options_.usage_half_life_ms),
      pipeline_host_(MakePipelineHost(this)),
      pipelines_(&batch_, store, clock, pipeline_host_.get()) {
  // A registered model version's files are never deleted by checkpoint retention.
  checkpoints_.SetProtector([this](const std::string& path) { return models_.Protects(path); });
}

Coordinator::~Coordinator() = default;

Status Coordinator::Recover() {
  RETURN_IF_ERROR(identity_.Recover());
  RETURN_IF_ERROR(audit_.Recover());
  RETURN_IF_ERROR(nodes_.Recover());
  RETURN_IF_ERROR(join_tokens_.Recover());
  RETURN_IF_ERROR(usage_.Recover(clock_->NowMs()));
  RETURN_IF_ERROR(jobs_.Recover(options_.stop_timeout_ms));
  RETURN_IF_ERROR(models_.Load(*store_));
  for (const auto& [id, job] : jobs_.all()) {
    RETURN_IF_ERROR(checkpoints_.Load(job.record));
    nodes_.ReserveTasks(job.record);
    output_dirs_[OutputDirKey(job.record.output_dir())] = id;
    metrics_.Recovered(job.record);  // its placement and preemption are not counted again
  }
  RETURN_IF_ERROR(pipelines_.Recover());
  RETURN_IF_ERROR(schedules_->Recover());
  spdlog::info("recovered {} node(s), {} active job(s) ({} pending) from {}", nodes_.all().size(), jobs_.all().size(),
               jobs_.PendingCount(), store_->dir());
  schedule_dirty_ = true;
  return Status::Ok();
}

void Coordinator::OnAgentMessage(const std::string& peer, const pb::AgentToCoordinator& message) {
  if (Status st = CheckAgentMessageLimits(message, options_.limits); !st.ok()) {
    // A registration is refused like any other (the agent reads a RegisterReply); other reports get an Error.
    if (message.has_register_()) return RefuseRegister(peer, message.register_(), st);
    OnBadAgentMessage(peer, st);
    return;
  }
  switch (message.body_case()) {
    case pb::AgentToCoordinator::kRegister:
      HandleRegister(peer, message.register_());
      break;
    case pb::AgentToCoordinator::kHeartbeat:
      HandleHeartbeat(peer, message.heartbeat());
      break;
    case pb::AgentToCoordinator::kTaskUpdate:
      HandleSequenced(peer, message.task_update().seq(), message);
      break;
    case pb::AgentToCoordinator::kCheckpointCommitted:
      HandleSequenced(peer, message.checkpoint_committed().seq(), message);
      break;
    case pb::AgentToCoordinator::kMetricBatch:
      HandleSequenced(peer, message.metric_batch().seq(), message);
      break;
    case pb::AgentToCoordinator::kCheckpointDeleted:
      HandleSequenced(peer, message.checkpoint_deleted().seq(), message);
      break;
    case pb::AgentToCoordinator::kCheckpointReplicated:
      HandleSequenced(peer, message.checkpoint_replicated().seq(), message);
      break;
    case pb::AgentToCoordinator::kLogChunk:
      HandleLogChunk(peer, message.log_chunk());
      break;
    case pb::AgentToCoordinator::BODY_NOT_SET:
      OnBadAgentMessage(peer, InvalidArgumentError("AgentToCoordinator message with no body"));
      break;
  }
}

StatusOr<std::string> Coordinator::BootstrapAdmin(const std::string& admin_name) {
  ASSIGN_OR_RETURN(std::string token, identity_.Bootstrap(admin_name));
  audit_.Append({.user = admin_name,
                 .team = std::string(kDefaultTeam),
                 .operation = "bootstrap",
                 .target = admin_name,
                 .message = "created the cluster admin and team 'default'"},
                Status::Ok());
  return token;
}

void Coordinator::OnClientRequest(const std::string& peer, const pb::ClientRequest& request) {
  if (request.has_submit()) {
    auto ticket = AdmitSubmit(peer, request);
    if (ticket) {
      HandleSubmit(PrepareSubmit(peer, request, std::move(ticket->submitter), std::move(ticket->team),
                                 options_.path_policy.get()));
    }
    return;
  }
  if (Status st = WithinLimits(request); !st.ok()) {
    ReplyError(peer, request.request_id(), st);
    return;
  }
  const auto who = AuthenticateClient(peer, request);
  if (!who) return;
  const uint64_t id = request.request_id();
  if (HandleIdentityRequest(*who, peer, request)) return;
  if (HandleScheduleRequest(*who, peer, request)) return;
  switch (request.body_case()) {
    case pb::ClientRequest::kCancel:
      HandleCancel(*who, peer, id, request.cancel());
      break;
    case pb::ClientRequest::kGetLogs:
      HandleGetLogs(*who, peer, id, request.get_logs());
      break;
    case pb::ClientRequest::kFetchOutputs:
      HandleFetchOutputs(*who, peer, id, request.fetch_outputs());
      break;
    case pb::ClientRequest::kDrain:
      HandleDrain(*who, peer, id, request.drain());
      break;
    case pb::ClientRequest::kCreateJoinToken:
    case pb::ClientRequest::kListJoinTokens:
    case pb::ClientRequest::kRevokeJoinToken:
    case pb::ClientRequest::kRemoveNode:
      HandleNodeAdminRequest(*who, peer, request);
      break;
    case pb::ClientRequest::kWatch:
      HandleWatch(*who, peer, request);
      break;
    case pb::ClientRequest::kListModels:
    case pb::ClientRequest::kGetModel:
    case pb::ClientRequest::kRegisterModel:
    case pb::ClientRequest::kPromoteModel:
    case pb::ClientRequest::kArchiveModel:
      HandleModelRequest(*who, peer, request);
      break;
    case pb::ClientRequest::kSubmitPipeline:
    case pb::ClientRequest::kListPipelines:
    case pb::ClientRequest::kGetPipeline:
    case pb::ClientRequest::kCancelPipeline:
    case pb::ClientRequest::kRetryPipeline:
      HandlePipelineRequest(*who, peer, request);
      break;
    case pb::ClientRequest::kGetJob:
    case pb::ClientRequest::kListJobs:
    case pb::ClientRequest::kListCheckpoints:
    case pb::ClientRequest::kListNodes:
      reads_.push_back({*who, peer, request});
      break;
    default:
      ReplyError(peer, id, InvalidArgumentError("ClientRequest with no body (which call is it?)"));
      break;
  }
}

void Coordinator::OnPreparedSubmit(const PreparedSubmit& prepared) {
  HandleSubmit(prepared);
}

void Coordinator::OnBadAgentMessage(const std::string& peer, const Status& error) {
  spdlog::warn("refused a message from agent peer: {}", error.ToString());
  pb::CoordinatorToAgent reply;
  reply.mutable_error()->set_code(static_cast<pb::ErrorCode>(error.code()));
  reply.mutable_error()->set_message(error.message());
  SendToPeer(peer, std::move(reply));
}

void Coordinator::OnBadClientMessage(const std::string& peer, uint64_t request_id, const Status& error) {
  spdlog::warn("refused a client message: {}", error.ToString());
  ReplyError(peer, request_id, error);
}

void Coordinator::Tick() {
  pipelines_.Advance();  // steps whose needs ended; jobs it creates are scheduled below
  DetectFailedNodes();
  CheckStopDeadlines();
  ExpireLogRequests();
  TickReplication();
  if (jobs_.TakeQueueGrew()) schedule_dirty_ = true;
  // Time moves the plan too (time limits, minimum runtimes, reservations): a pass at least every interval
  // while anything waits or runs.
  const int64_t now = clock_->NowMs();
  if (now - last_schedule_ms_ >= options_.schedule_interval_ms && !jobs_.all().empty()) schedule_dirty_ = true;
  if (schedule_dirty_) RunSchedulingPass();
  usage_.Persist(now, options_.usage_persist_interval_ms);
  schedules_->Tick();  // due fires: their records and pipeline runs go into this round's batch
}

StatusOr<std::vector<Outgoing>> Coordinator::Flush() {
  if (jobs_.TakeQueueGrew()) schedule_dirty_ = true;
  if (schedule_dirty_) RunSchedulingPass();
  jobs_.WriteChanged();
  if (!batch_.empty()) {
    Status st = store_->Commit(batch_);
    if (!st.ok()) return st.WithContext("committing the coordinator's state (fatal: restart to recover)");
    batch_.Clear();
  }
  for (const auto& id : jobs_.EraseEnded()) checkpoints_.Forget(id);
  std::vector<DeferredRead> reads;
  reads.swap(reads_);
  for (const auto& read : reads) AnswerRead(read);
  AnswerWatchers(/*all_due=*/false);
  std::vector<Outgoing> out;
  out.swap(outbox_);
  return out;
}

int64_t Coordinator::NextWakeupMs() const {
  const int64_t now = clock_->NowMs();
  int64_t wake = std::min(now + 1000, nodes_.NextSilenceDeadlineMs(options_.heartbeat_timeout_ms));
  for (const auto& watcher : watchers_) wake = std::min(wake, watcher.deadline_ms);
  for (const auto& [id, request] : log_requests_) wake = std::min(wake, request.deadline_ms);
  for (const auto& [id, job] : jobs_.all()) {
    if (job.stop_deadline_ms > 0) wake = std::min(wake, job.stop_deadline_ms);
  }
  wake = std::min(wake, schedules_->NextWakeupMs());
  return std::max(wake, now);
}

const pb::JobRecord* Coordinator::FindActiveJob(const std::string& job_id) const {
  const Job* job = jobs_.Find(job_id);
  return job == nullptr ? nullptr : &job->record;
}

StatusOr<pb::JobRecord> Coordinator::GetJobRecord(const std::string& job_id) const {
  return jobs_.GetRecord(job_id);
}

const pb::NodeRecord* Coordinator::FindNode(const std::string& node_id) const {
  const Node* node = nodes_.Find(node_id);
  return node == nullptr ? nullptr : &node->record;
}

std::vector<pb::NodeRecord> Coordinator::Nodes() const {
  std::vector<pb::NodeRecord> out;
  for (const auto& [id, node] : nodes_.all()) {
    out.push_back(node.record);
    out.back().set_last_heartbeat_ms(node.last_heartbeat_ms);
    out.back().clear_credential_hash();  // a node's secret never leaves the coordinator, not even hashed
    out.back().set_slots_used(static_cast<uint32_t>(node.used_slots.size()));
  }
  return out;
}

std::vector<pb::JobRecord> Coordinator::ActiveJobs() const {
  std::vector<pb::JobRecord> out;
  for (const auto& [id, job] : jobs_.all()) {
    if (!protocol::IsTerminal(job.record.state())) out.push_back(job.record);
  }
  return out;
}

std::map<pb::JobState, size_t> Coordinator::ActiveJobsByState() const {
  std::map<pb::JobState, size_t> counts;
  for (const auto& [id, job] : jobs_.all()) ++counts[job.record.state()];
  return counts;
}

}  // namespace anneal::coordinator
