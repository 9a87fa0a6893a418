// The client channel's reads (answered after this round's batch is durable), long polls, logs, drain, and the
// metric reports that feed them.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "protocol/states.h"
#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

void Coordinator::Reply(const std::string& peer, pb::ClientReply reply) {
  if (!reply.has_error()) reply.mutable_error()->set_code(pb::OK);
  outbox_.push_back({peer, std::move(reply)});
}

void Coordinator::ReplyError(const std::string& peer, uint64_t request_id, const Status& error) {
  pb::ClientReply reply;
  reply.set_request_id(request_id);
  reply.mutable_error()->set_code(static_cast<pb::ErrorCode>(error.code()));
  reply.mutable_error()->set_message(error.message());
  outbox_.push_back({peer, std::move(reply)});
}

void Coordinator::HandleMetricBatch(const pb::MetricBatch& batch) {
  Job* found = jobs_.Find(batch.job_id());
  if (found == nullptr || batch.epoch() != found->record.epoch()) return;  // ended or stale attempt
  Job& job = *found;
  for (const auto& reported : batch.points()) {
    pb::MetricPoint point = reported;
    point.set_job_id(batch.job_id());
    point.set_attempt(batch.attempt());
    if (point.time_ms() == 0) point.set_time_ms(clock_->NowMs());
    batch_.Put(Table::kMetrics, storage::JobStepKey(batch.job_id(), point.step()), point);
    job.last_metric_step = std::max(job.last_metric_step.value_or(0), point.step());
  }
  for (const auto& event : batch.events()) {
    jobs_.AddEvent(job, event.kind().empty() ? "message" : event.kind(), event.message());
  }
}

StatusOr<pb::JobRecord> Coordinator::ReadableJob(const Principal& who, const std::string& job_id) const {
  ASSIGN_OR_RETURN(pb::JobRecord job, GetJobRecord(job_id));
  RETURN_IF_ERROR(RequireTeamRole(who, pb::ROLE_VIEWER, JobTeam(job), "read jobs of"));
  return job;
}

void Coordinator::HandleWatch(const Principal& who, const std::string& peer, const pb::ClientRequest& request) {
  const uint64_t request_id = request.request_id();
  if (auto job = ReadableJob(who, request.watch().job_id()); !job.ok()) {
    ReplyError(peer, request_id, job.status());
    return;
  }
  const Limits& limits = options_.limits;
  const size_t for_peer =
      std::count_if(watchers_.begin(), watchers_.end(), [&](const Watcher& w) { return w.peer == peer; });
  if (for_peer >= limits.max_watchers_per_peer) {
    ReplyError(peer, request_id,
               ResourceExhaustedError(fmt::format("this connection already has {} WatchJob long polls waiting, the "
                                                  "limit (max_watchers_per_peer)",
                                                  for_peer)));
    return;
  }
  if (watchers_.size() >= limits.max_watchers_total) {
    ReplyError(peer, request_id,
               ResourceExhaustedError(fmt::format("the coordinator already has {} WatchJob long polls waiting, the "
                                                  "limit (max_watchers_total); retry shortly",
                                                  watchers_.size())));
    return;
  }
  const int64_t timeout = std::min<int64_t>(request.watch().timeout_ms(), 600'000);
  watchers_.push_back({who, peer, request_id, request.watch(), clock_->NowMs() + timeout});
}

void Coordinator::HandleGetLogs(const Principal& who, const std::string& peer, uint64_t request_id,
                                const pb::GetLogsRequest& request) {
  auto job = ReadableJob(who, request.job_id());
  if (!job.ok()) {
    ReplyError(peer, request_id, job.status());
    return;
  }
  std::string node_id;
  for (const auto& node : job->placement().nodes()) {
    for (const auto& rank : node.ranks()) {
      if (rank.global_rank() == request.rank()) node_id = node.node_id();
    }
  }
  if (node_id.empty()) {
    ReplyError(peer, request_id,
               NotFoundError(fmt::format("job {} has no rank {} (placed: {})", request.job_id(), request.rank(),
                                         job->placement().nodes_size() > 0)));
    return;
  }
  const Node* node = nodes_.Find(node_id);
  if (node == nullptr || !node->Connected()) {
    ReplyError(peer, request_id,
               UnavailableError(fmt::format("the logs of job {} rank {} are on node {}, which is "
                                            "down or not connected",
                                            request.job_id(), request.rank(), node_id)));
    return;
  }
  const size_t pending_for_peer = std::count_if(log_requests_.begin(), log_requests_.end(),
                                                [&](const auto& entry) { return entry.second.peer == peer; });
  if (pending_for_peer >= options_.limits.max_log_fetches_per_peer) {
    ReplyError(peer, request_id,
               ResourceExhaustedError(fmt::format("this connection already has {} GetLogs waiting for agents, the "
                                                  "limit (max_log_fetches_per_peer); wait for their replies",
                                                  pending_for_peer)));
    return;
  }
  const uint64_t internal_id = next_request_id_++;
  pb::CoordinatorToAgent message;
  auto* fetch = message.mutable_fetch_logs();
  fetch->set_request_id(internal_id);
  fetch->set_job_id(request.job_id());
  fetch->set_rank(request.rank());
  fetch->set_offset(request.offset());
  fetch->set_max_bytes(request.max_bytes() == 0 ? 1 << 20 : std::min<uint32_t>(request.max_bytes(), 8 << 20));
  SendToNode(*node, std::move(message));
  log_requests_[internal_id] = {node_id, peer, request_id, request.offset(),
                                clock_->NowMs() + options_.log_fetch_timeout_ms};
}

void Coordinator::HandleLogChunk(const std::string& peer, const pb::LogChunk& chunk) {
  auto it = log_requests_.find(chunk.request_id());
  if (it == log_requests_.end()) return;  // answered already (timeout) or unknown
  const Node* sender = nodes_.FindByPeer(peer);
  if (sender == nullptr || sender->record.node_id() != it->second.node_id) {
    // Only the node the request went to answers it (node identity: coordinator/node_identity.cc).
    spdlog::warn("ignored a LogChunk for request {} from {}: the request went to node {}", chunk.request_id(),
                 sender == nullptr ? std::string("an unregistered peer") : "node " + sender->record.node_id(),
                 it->second.node_id);
    return;
  }
  const PendingLogRequest request = it->second;
  log_requests_.erase(it);
  if (chunk.has_error() && chunk.error().code() != pb::OK) {
    pb::ClientReply reply;
    reply.set_request_id(request.client_request_id);
    *reply.mutable_error() = chunk.error();
    Reply(request.peer, std::move(reply));
    return;
  }
  pb::ClientReply reply;
  reply.set_request_id(request.client_request_id);
  auto* logs = reply.mutable_get_logs();
  logs->set_data(chunk.data());
  logs->set_next_offset(chunk.offset() + chunk.data().size());
  logs->set_eof(chunk.eof());
  Reply(request.peer, std::move(reply));
}

void Coordinator::ExpireLogRequests() {
  const int64_t now = clock_->NowMs();
  for (auto it = log_requests_.begin(); it != log_requests_.end();) {
    if (now < it->second.deadline_ms) {
      ++it;
      continue;
    }
    ReplyError(it->second.peer, it->second.client_request_id,
               DeadlineExceededError(fmt::format("node {} did not send the logs within {} ms", it->second.node_id,
                                                 options_.log_fetch_timeout_ms)));
    it = log_requests_.erase(it);
  }
}

void Coordinator::HandleDrain(const Principal& who, const std::string& peer, uint64_t request_id,
                              const pb::DrainNodeRequest& request) {
  pb::ClientRequest audited;
  audited.set_request_id(request_id);
  *audited.mutable_drain() = request;
  Status allowed = RequireClusterAdmin(who, request.undrain() ? "undrain nodes" : "drain nodes");
  if (allowed.ok() && request.undrain() && request.evict()) {
    allowed = InvalidArgumentError("--evict goes with a drain, not with --undrain");
  }
  StatusOr<pb::NodeState> state = allowed;
  if (allowed.ok()) state = nodes_.SetDraining(request.node_id(), request.undrain());
  pb::ClientReply reply;
  reply.set_request_id(request_id);
  std::vector<std::string> evicted;
  if (state.ok()) {
    schedule_dirty_ = true;
    reply.mutable_drain()->set_state(*state);
    if (request.evict()) evicted = EvictJobsOn(request.node_id(), who.user);
    for (const auto& id : evicted) reply.mutable_drain()->add_evicted_job_ids(id);
  }
  std::string message = state.ok() ? fmt::format("now {}", pb::NodeState_Name(*state)) : "";
  if (!evicted.empty()) message += fmt::format("; evicting {}", fmt::join(evicted, ", "));
  AuditAndReply(who, peer, audited, "", request.node_id(), state.status(), std::move(reply), message);
}

std::vector<std::string> Coordinator::EvictJobsOn(const std::string& node_id, const std::string& user) {
  std::vector<std::string> victims;
  for (const auto& [id, job] : jobs_.all()) {
    if (job.record.state() != pb::JOB_RUNNING) continue;  // a job still starting is stopped by the drain's epoch
    const auto& nodes = job.record.placement().nodes();
    if (std::any_of(nodes.begin(), nodes.end(), [&](const auto& n) { return n.node_id() == node_id; })) {
      victims.push_back(id);
    }
  }
  for (const std::string& id : victims) {
    ApplyPreemption({.victim_job_id = id,
                     .beneficiary_job_id = "",  // an eviction: nobody takes the slots
                     .kind = PreemptionKind::kReclaim,
                     .reason = fmt::format("node {} drained with --evict by {}", node_id, user)});
  }
  return victims;
}

StatusOr<std::vector<pb::JobEvent>> Coordinator::ReadEvents(const std::string& job_id, uint64_t after,
                                                            size_t limit) const {
  std::vector<pb::JobEvent> out;
  RETURN_IF_ERROR(store_->ScanRecords<pb::JobEvent>(
      Table::kEvents, storage::IdPrefix(job_id),
      [&](const pb::JobEvent& e) {
        out.push_back(e);
        return out.size() < limit;
      },
      storage::JobStepKey(job_id, after + 1)));
  return out;
}

StatusOr<std::vector<pb::MetricPoint>> Coordinator::ReadMetrics(const std::string& job_id, uint64_t after,
                                                                size_t limit) const {
  std::vector<pb::MetricPoint> out;
  RETURN_IF_ERROR(store_->ScanRecords<pb::MetricPoint>(
      Table::kMetrics, storage::IdPrefix(job_id),
      [&](const pb::MetricPoint& m) {
        out.push_back(m);
        return out.size() < limit;
      },
      storage::JobStepKey(job_id, after + 1)));
  return out;
}

void Coordinator::AnswerRead(const DeferredRead& read) {
  const pb::ClientRequest& request = read.request;
  pb::ClientReply reply;
  reply.set_request_id(request.request_id());
  Status status;
  switch (request.body_case()) {
    case pb::ClientRequest::kGetJob: {
      auto job = ReadableJob(read.who, request.get_job().job_id());
      if (!job.ok()) {
        status = job.status();
        break;
      }
      auto* out = reply.mutable_get_job();
      *out->mutable_job() = *job;
      auto events = ReadEvents(job->job_id(), 0, options_.max_watch_items);
      if (!events.ok()) {
        status = events.status();
        break;
      }
      for (auto& e : *events) *out->add_events() = std::move(e);
      std::deque<pb::MetricPoint> last;  // the latest few steps, read newest first
      status = store_->ScanRecordsReverse<pb::MetricPoint>(Table::kMetrics, storage::IdPrefix(job->job_id()),
                                                           [&](const pb::MetricPoint& m) {
                                                             last.push_front(m);
                                                             return last.size() < 10;
                                                           });
      for (auto& m : last) *out->add_last_metrics() = std::move(m);
      auto checkpoints = checkpoints_.Read(job->job_id());
      if (!checkpoints.ok()) {
        status = checkpoints.status();
        break;
      }
      for (auto& c : *checkpoints) *out->add_checkpoints() = std::move(c);
      break;
    }
    case pb::ClientRequest::kListJobs: {
      const pb::ListJobsRequest& list = request.list_jobs();
      const auto& filter = list.states();
      const size_t limit = list.limit() == 0 ? 100 : list.limit();
      const bool active_only = !filter.empty() && std::all_of(filter.begin(), filter.end(), [](int s) {
        return !protocol::IsTerminal(static_cast<pb::JobState>(s));
      });
      // Only the jobs of teams the caller may read (every job for a cluster admin), of `team` when given, and
      // submitted before the page token's job (job ids sort in submission order, as the store keys them).
      auto wanted = [&](const pb::JobRecord& r) {
        const bool state_ok = filter.empty() || std::find(filter.begin(), filter.end(), r.state()) != filter.end();
        return state_ok && (list.team().empty() || JobTeam(r) == list.team()) &&
               (list.page_token().empty() || r.job_id() < list.page_token()) &&
               (read.who.cluster_admin || RoleIn(read.who, JobTeam(r)) >= pb::ROLE_VIEWER);
      };
      std::deque<pb::JobRecord> last;  // the most recent `limit` matches, in submission order
      if (active_only) {
        for (const auto& [id, job] : jobs_.all()) {
          if (!wanted(job.record)) continue;
          last.push_back(job.record);
          if (last.size() > limit) last.pop_front();
        }
      } else {
        // Newest first, stopping at `limit` matches: the loop never parses the whole history.
        status = store_->ScanRecordsReverse<pb::JobRecord>(Table::kJobs, "", [&](const pb::JobRecord& r) {
          if (wanted(r)) last.push_front(r);
          return last.size() < limit;
        });
      }
      auto* out = reply.mutable_list_jobs();  // an empty list is still a list_jobs reply
      if (last.size() == limit) out->set_next_page_token(last.front().job_id());
      for (auto& r : last) *out->add_jobs() = std::move(r);
      break;
    }
    case pb::ClientRequest::kListCheckpoints: {
      auto job = ReadableJob(read.who, request.list_checkpoints().job_id());
      if (!job.ok()) {
        status = job.status();
        break;
      }
      auto checkpoints = checkpoints_.Read(job->job_id());
      if (!checkpoints.ok()) {
        status = checkpoints.status();
        break;
      }
      reply.mutable_list_checkpoints();  // an empty list is still a list_checkpoints reply
      for (auto& c : *checkpoints) *reply.mutable_list_checkpoints()->add_checkpoints() = std::move(c);
      break;
    }
    case pb::ClientRequest::kListNodes:
      reply.mutable_list_nodes();  // an empty list is still a list_nodes reply
      for (auto& node : Nodes()) *reply.mutable_list_nodes()->add_nodes() = std::move(node);
      break;
    default:
      status = InternalError("not a read request");
  }
  if (!status.ok()) {
    ReplyError(read.peer, request.request_id(), status);
    return;
  }
  Reply(read.peer, std::move(reply));
}

bool Coordinator::WatchReady(const Watcher& watcher, int64_t now) const {
  if (now >= watcher.deadline_ms) return true;
  const Job* job = jobs_.Find(watcher.request.job_id());
  if (job == nullptr || protocol::IsTerminal(job->record.state())) return true;  // unknown or ended: answer now
  if (job->record.next_event_seq() > watcher.request.after_event_seq() + 1) return true;
  return job->last_metric_step && *job->last_metric_step > watcher.request.after_metric_step();
}

void Coordinator::AnswerWatch(const Watcher& watcher) {
  const pb::WatchJobRequest& request = watcher.request;
  auto job = GetJobRecord(request.job_id());
  if (!job.ok()) {
    ReplyError(watcher.peer, watcher.request_id, job.status());
    return;
  }
  pb::ClientReply reply;
  reply.set_request_id(watcher.request_id);
  auto* out = reply.mutable_watch();
  *out->mutable_job() = *job;
  auto events = ReadEvents(job->job_id(), request.after_event_seq(), options_.max_watch_items);
  auto metrics = ReadMetrics(job->job_id(), request.after_metric_step(), options_.max_watch_items);
  if (!events.ok() || !metrics.ok()) {
    ReplyError(watcher.peer, watcher.request_id, events.ok() ? metrics.status() : events.status());
    return;
  }
  for (auto& e : *events) *out->add_events() = std::move(e);
  for (auto& m : *metrics) *out->add_metrics() = std::move(m);
  Reply(watcher.peer, std::move(reply));
}

void Coordinator::AnswerWatchers(bool all_due) {
  const int64_t now = clock_->NowMs();
  std::deque<Watcher> waiting;
  for (auto& watcher : watchers_) {
    if (all_due || WatchReady(watcher, now)) {
      AnswerWatch(watcher);
    } else {
      waiting.push_back(std::move(watcher));
    }
  }
  watchers_.swap(waiting);
}

}  // namespace anneal::coordinator
