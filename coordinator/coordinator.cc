// Coordinator lifecycle: recovery from the store, the Tick/Flush round, dispatch, introspection.
#include "coordinator/coordinator.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/job_state_machine.h"
#include "coordinator/store_keys.h"
#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

Coordinator::Coordinator(CoordinatorOptions options, storage::StateStore* store, Clock* clock)
    : options_(std::move(options)), store_(store), clock_(clock) {}

Coordinator::~Coordinator() = default;

Status Coordinator::Recover() {
  ASSIGN_OR_RETURN(auto next_job, store_->GetU64(Table::kMeta, kNextJobKey));
  ASSIGN_OR_RETURN(auto next_epoch, store_->GetU64(Table::kMeta, kNextEpochKey));
  next_job_number_ = next_job.value_or(1);
  next_epoch_ = next_epoch.value_or(1);
  const int64_t now = clock_->NowMs();

  Status node_error;
  RETURN_IF_ERROR(store_->ScanRecords<pb::NodeRecord>(Table::kNodes, "", [&](const pb::NodeRecord& record) {
    NodeRuntime node;
    node.record = record;
    node.last_heartbeat_ms = now;  // a full timeout to re-register after a coordinator restart
    auto seq = store_->GetU64(Table::kMeta, NodeSeqKey(record.node_id()));
    if (!seq.ok()) {
      node_error = seq.status();
      return false;
    }
    node.last_applied_seq = seq->value_or(0);
    nodes_.emplace(record.node_id(), std::move(node));
    return true;
  }));
  RETURN_IF_ERROR(node_error);

  std::vector<std::string> active_ids;
  RETURN_IF_ERROR(store_->Scan(Table::kMeta, kActivePrefix, [&](std::string_view key, std::string_view) {
    active_ids.emplace_back(key.substr(kActivePrefix.size()));
    return true;
  }));
  for (const auto& id : active_ids) {
    pb::JobRecord record;
    RETURN_IF_ERROR(store_->Get(Table::kJobs, id, &record).WithContext("recovering active job " + id));
    RETURN_IF_ERROR(LoadJob(record));
  }
  for (auto& [id, job] : jobs_) ReserveTasks(job);
  spdlog::info("recovered {} node(s), {} active job(s) ({} pending) from {}", nodes_.size(), jobs_.size(),
               queue_.size(), store_->dir());
  schedule_dirty_ = true;
  return Status::Ok();
}

void Coordinator::OnAgentMessage(const std::string& peer, const pb::AgentToCoordinator& message) {
  switch (message.body_case()) {
    case pb::AgentToCoordinator::kRegister: HandleRegister(peer, message.register_()); break;
    case pb::AgentToCoordinator::kHeartbeat: HandleHeartbeat(peer, message.heartbeat()); break;
    case pb::AgentToCoordinator::kTaskUpdate: HandleSequenced(peer, message.task_update().seq(), message); break;
    case pb::AgentToCoordinator::kCheckpointCommitted:
      HandleSequenced(peer, message.checkpoint_committed().seq(), message);
      break;
    case pb::AgentToCoordinator::kMetricBatch: HandleSequenced(peer, message.metric_batch().seq(), message); break;
    case pb::AgentToCoordinator::kCheckpointDeleted:
      HandleSequenced(peer, message.checkpoint_deleted().seq(), message);
      break;
    case pb::AgentToCoordinator::kLogChunk: HandleLogChunk(message.log_chunk()); break;
    case pb::AgentToCoordinator::BODY_NOT_SET:
      OnBadAgentMessage(peer, InvalidArgumentError("AgentToCoordinator message with no body"));
      break;
  }
}

void Coordinator::OnClientRequest(const std::string& peer, const pb::ClientRequest& request) {
  const uint64_t id = request.request_id();
  if (!Authorized(request)) {
    ReplyError(peer, id, UnauthenticatedError("the request's token is not valid for this coordinator "
                                              "(pass the admin token: --token or ANNEAL_TOKEN)"));
    return;
  }
  switch (request.body_case()) {
    case pb::ClientRequest::kSubmit: HandleSubmit(PrepareSubmit(peer, request)); break;
    case pb::ClientRequest::kCancel: HandleCancel(peer, id, request.cancel()); break;
    case pb::ClientRequest::kGetLogs: HandleGetLogs(peer, id, request.get_logs()); break;
    case pb::ClientRequest::kDrain: HandleDrain(peer, id, request.drain()); break;
    case pb::ClientRequest::kWatch: {
      const int64_t timeout = std::min<int64_t>(request.watch().timeout_ms(), 600'000);
      watchers_.push_back({peer, id, request.watch(), clock_->NowMs() + timeout});
      break;
    }
    case pb::ClientRequest::kGetJob:
    case pb::ClientRequest::kListJobs:
    case pb::ClientRequest::kListCheckpoints:
    case pb::ClientRequest::kListNodes:
      reads_.push_back({peer, request});
      break;
    case pb::ClientRequest::BODY_NOT_SET:
      ReplyError(peer, id, InvalidArgumentError("ClientRequest with no body (which call is it?)"));
      break;
  }
}

void Coordinator::OnPreparedSubmit(const PreparedSubmit& prepared) { HandleSubmit(prepared); }

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
  DetectFailedNodes();
  CheckStopDeadlines();
  ExpireLogRequests();
  if (schedule_dirty_) Schedule();
}

StatusOr<std::vector<Outgoing>> Coordinator::Flush() {
  if (schedule_dirty_) Schedule();
  for (const auto& id : dirty_jobs_) {
    auto it = jobs_.find(id);
    if (it != jobs_.end()) batch_.Put(Table::kJobs, id, it->second.record);
  }
  dirty_jobs_.clear();
  if (!batch_.empty()) {
    Status st = store_->Commit(batch_);
    if (!st.ok()) return st.WithContext("committing the coordinator's state (fatal: restart to recover)");
    batch_.Clear();
  }
  for (const auto& id : to_erase_) {
    auto it = jobs_.find(id);
    if (it != jobs_.end() && protocol::IsTerminal(it->second.record.state())) jobs_.erase(it);
  }
  to_erase_.clear();
  std::vector<DeferredRead> reads;
  reads.swap(reads_);
  for (const auto& read : reads) AnswerRead(read);
  AnswerWatchers(/*all_due=*/false);
  changed_jobs_.clear();
  std::vector<Outgoing> out;
  out.swap(outbox_);
  return out;
}

int64_t Coordinator::NextWakeupMs() const {
  const int64_t now = clock_->NowMs();
  int64_t wake = now + 1000;
  for (const auto& [id, node] : nodes_) {
    if (node.record.state() != pb::NODE_DOWN) {
      wake = std::min(wake, node.last_heartbeat_ms + options_.heartbeat_timeout_ms + 1);
    }
  }
  for (const auto& watcher : watchers_) wake = std::min(wake, watcher.deadline_ms);
  for (const auto& [id, request] : log_requests_) wake = std::min(wake, request.deadline_ms);
  for (const auto& [id, job] : jobs_) {
    if (job.stop_deadline_ms > 0) wake = std::min(wake, job.stop_deadline_ms);
  }
  return std::max(wake, now);
}

const pb::JobRecord* Coordinator::FindActiveJob(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second.record;
}

StatusOr<pb::JobRecord> Coordinator::GetJobRecord(const std::string& job_id) const {
  if (const auto* job = FindActiveJob(job_id)) return *job;
  pb::JobRecord record;
  Status st = store_->Get(Table::kJobs, job_id, &record);
  if (st.code() == StatusCode::kNotFound) return NotFoundError(fmt::format("no job '{}'", job_id));
  RETURN_IF_ERROR(st);
  return record;
}

const pb::NodeRecord* Coordinator::FindNode(const std::string& node_id) const {
  auto it = nodes_.find(node_id);
  return it == nodes_.end() ? nullptr : &it->second.record;
}

std::vector<pb::NodeRecord> Coordinator::Nodes() const {
  std::vector<pb::NodeRecord> out;
  for (const auto& [id, node] : nodes_) {
    out.push_back(node.record);
    out.back().set_last_heartbeat_ms(node.last_heartbeat_ms);
  }
  return out;
}

std::vector<pb::JobRecord> Coordinator::ActiveJobs() const {
  std::vector<pb::JobRecord> out;
  for (const auto& [id, job] : jobs_) {
    if (!protocol::IsTerminal(job.record.state())) out.push_back(job.record);
  }
  return out;
}

std::map<pb::JobState, size_t> Coordinator::ActiveJobsByState() const {
  std::map<pb::JobState, size_t> counts;
  for (const auto& [id, job] : jobs_) ++counts[job.record.state()];
  return counts;
}

}  // namespace anneal::coordinator
