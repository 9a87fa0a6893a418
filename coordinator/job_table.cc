// JobTable (coordinator/job_table.h): job records, the pending queue, events and their persistence.
#include "coordinator/job_table.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "coordinator/job_state_machine.h"
#include "coordinator/store_keys.h"
#include "protocol/states.h"
#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

JobTable::JobTable(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock)
    : batch_(batch), store_(store), clock_(clock) {}

Status JobTable::Recover(int64_t stop_timeout_ms) {
  ASSIGN_OR_RETURN(auto next_job, store_->GetU64(Table::kMeta, kNextJobKey));
  ASSIGN_OR_RETURN(auto next_epoch, store_->GetU64(Table::kMeta, kNextEpochKey));
  next_job_number_ = next_job.value_or(1);
  next_epoch_ = next_epoch.value_or(1);
  std::vector<std::string> active_ids;
  RETURN_IF_ERROR(store_->Scan(Table::kMeta, kActivePrefix, [&](std::string_view key, std::string_view) {
    active_ids.emplace_back(key.substr(kActivePrefix.size()));
    return true;
  }));
  for (const auto& id : active_ids) {
    pb::JobRecord record;
    RETURN_IF_ERROR(store_->Get(Table::kJobs, id, &record).WithContext("recovering active job " + id));
    RETURN_IF_ERROR(Load(record, stop_timeout_ms));
  }
  queue_grew_ = !queue_.empty();
  return Status::Ok();
}

Status JobTable::Load(const pb::JobRecord& record, int64_t stop_timeout_ms) {
  Job job;
  job.record = record;
  ASSIGN_OR_RETURN(auto last_metric, store_->LastKeyWithPrefix(Table::kMetrics, storage::IdPrefix(record.job_id())));
  if (last_metric) {
    if (auto decoded = storage::DecodeJobStepKey(*last_metric)) job.last_metric_step = decoded->second;
  }
  const int64_t now = clock_->NowMs();
  for (const auto& [node_id, state] : record.task_states()) job.task_last_seen_ms[node_id] = now;
  if (record.state() == pb::JOB_RESTARTING || record.state() == pb::JOB_CANCELLING) {
    job.stop_deadline_ms = now + stop_timeout_ms;
  }
  if (record.state() == pb::JOB_PENDING) queue_.insert(KeyOf(record));
  jobs_.emplace(record.job_id(), std::move(job));
  return Status::Ok();
}

JobTable::QueueKey JobTable::KeyOf(const pb::JobRecord& record) {
  return {-static_cast<int64_t>(record.priority()), record.submit_seq(), record.job_id()};
}

Job& JobTable::Submit(pb::JobRecord record) {
  const uint64_t number = next_job_number_++;
  batch_->PutU64(Table::kMeta, kNextJobKey, next_job_number_);
  record.set_job_id(fmt::format("job-{:06d}", number));
  if (record.name().empty()) record.set_name(record.job_id());
  record.set_submit_seq(number);
  record.set_submitted_at_ms(clock_->NowMs());
  record.set_next_event_seq(1);
  const std::string id = record.job_id();
  Job job;
  job.record = std::move(record);
  Job& stored = jobs_.emplace(id, std::move(job)).first->second;
  Transition(stored, pb::JOB_PENDING, "submitted");
  return stored;
}

void JobTable::AppendEvent(Job& job, const std::string& kind, pb::JobState from, pb::JobState to,
                           const std::string& message) {
  pb::JobRecord& r = job.record;
  pb::JobEvent event;
  event.set_job_id(r.job_id());
  event.set_seq(std::max<uint64_t>(r.next_event_seq(), 1));
  event.set_time_ms(clock_->NowMs());
  event.set_from_state(from);
  event.set_to_state(to);
  event.set_attempt(r.attempt());
  event.set_epoch(r.epoch());
  event.set_kind(kind);
  event.set_message(message);
  r.set_next_event_seq(event.seq() + 1);
  batch_->Put(Table::kEvents, storage::JobStepKey(r.job_id(), event.seq()), event);
  MarkChanged(job);
}

void JobTable::Transition(Job& job, pb::JobState to, const std::string& message) {
  pb::JobRecord& r = job.record;
  const pb::JobState from = r.state();
  ANNEAL_CHECK(IsAllowedTransition(from, to));
  const int64_t now = clock_->NowMs();
  AppendEvent(job, "state", from, to, message);
  spdlog::info("job {}: {} -> {} ({})", r.job_id(), protocol::StateName(from), protocol::StateName(to), message);

  if (from == pb::JOB_PENDING) queue_.erase(KeyOf(r));
  if (to == pb::JOB_PENDING) {
    queue_.insert(KeyOf(r));
    queue_grew_ = true;
  }
  r.set_state(to);
  if (to == pb::JOB_RUNNING && r.started_at_ms() == 0) r.set_started_at_ms(now);
  if (from == pb::JOB_STATE_UNSPECIFIED) batch_->PutRaw(Table::kMeta, ActiveKey(r.job_id()), "");
  if (protocol::IsTerminal(to)) {
    r.set_finished_at_ms(now);
    batch_->Delete(Table::kMeta, ActiveKey(r.job_id()));
    ended_.push_back(r.job_id());
  }
  if (to != pb::JOB_RESTARTING && to != pb::JOB_CANCELLING) job.stop_deadline_ms = 0;
}

void JobTable::AddEvent(Job& job, const std::string& kind, const std::string& message) {
  AppendEvent(job, kind, job.record.state(), job.record.state(), message);
}

bool JobTable::SetTaskState(Job& job, const std::string& node_id, pb::TaskState state) {
  auto& tasks = *job.record.mutable_task_states();
  auto it = tasks.find(node_id);
  if (it == tasks.end() || protocol::TaskEnded(it->second) || it->second == state) return false;
  it->second = state;
  job.task_last_seen_ms[node_id] = clock_->NowMs();
  MarkChanged(job);
  return protocol::TaskEnded(state);
}

uint64_t JobTable::NextEpoch() {
  const uint64_t epoch = next_epoch_++;
  batch_->PutU64(Table::kMeta, kNextEpochKey, next_epoch_);
  return epoch;
}

Job* JobTable::Find(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const Job* JobTable::Find(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

StatusOr<pb::JobRecord> JobTable::GetRecord(const std::string& job_id) const {
  if (const Job* job = Find(job_id)) return job->record;
  pb::JobRecord record;
  Status st = store_->Get(Table::kJobs, job_id, &record);
  if (st.code() == StatusCode::kNotFound) return NotFoundError(fmt::format("no job '{}'", job_id));
  RETURN_IF_ERROR(st);
  return record;
}

std::vector<std::string> JobTable::PendingInOrder() const {
  std::vector<std::string> ids;
  ids.reserve(queue_.size());
  for (const auto& key : queue_) ids.push_back(std::get<2>(key));
  return ids;
}

bool JobTable::TakeQueueGrew() {
  return std::exchange(queue_grew_, false);
}

void JobTable::WriteChanged() {
  for (const auto& id : changed_) {
    if (const Job* job = Find(id)) batch_->Put(Table::kJobs, id, job->record);
  }
  changed_.clear();
}

std::vector<std::string> JobTable::EraseEnded() {
  std::vector<std::string> erased;
  for (const auto& id : ended_) {
    auto it = jobs_.find(id);
    if (it != jobs_.end() && protocol::IsTerminal(it->second.record.state())) {
      jobs_.erase(it);
      erased.push_back(id);
    }
  }
  ended_.clear();
  return erased;
}

}  // namespace anneal::coordinator
