// ScheduleManager: the schedule records, their lifecycle and the exactly-once fire bookkeeping
// (coordinator/schedules.h). The create-time validation and the request bounds are in schedule_validate.cc.
#include "coordinator/schedules.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <limits>

namespace anneal::coordinator {
namespace {

std::string IsoUtc(int64_t ms) {
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::map<std::string, std::string> Overrides(const pb::ScheduleRecord& record) {
  return {record.overrides().begin(), record.overrides().end()};
}

}  // namespace

StatusOr<CronDecision> DecideCronFire(const pb::ScheduleRecord& schedule, const CronExpression& cron, int64_t now_ms,
                                      int64_t misfire_grace_ms) {
  CronDecision decision;
  if (schedule.state() != pb::SCHEDULE_ACTIVE) return decision;
  ASSIGN_OR_RETURN(FireWindow due, FiresBetween(cron, schedule.time_zone(), schedule.cursor_ms(), now_ms));
  if (due.count == 0) return decision;
  decision.fire_time_ms = due.last_ms;
  decision.new_cursor_ms = due.last_ms;
  const bool latest_on_time = now_ms - due.last_ms <= misfire_grace_ms;
  decision.missed_count = latest_on_time ? due.count - 1 : due.count;
  if (!latest_on_time && schedule.missed() == pb::MISSED_SKIP) {
    decision.action = CronDecision::Action::kSkipMissed;
  } else {
    decision.action = CronDecision::Action::kRun;
  }
  return decision;
}

ConcurrencyAction DecideConcurrency(const pb::ScheduleRecord& schedule, bool previous_active) {
  if (!previous_active) return ConcurrencyAction::kStart;
  switch (schedule.concurrency()) {
    case pb::CONCURRENCY_QUEUE:
      return schedule.queued_fire_ms() != 0 ? ConcurrencyAction::kCoalesce : ConcurrencyAction::kQueue;
    case pb::CONCURRENCY_REPLACE:
      return ConcurrencyAction::kReplace;
    default:
      return ConcurrencyAction::kSkip;
  }
}

ScheduleManager::ScheduleManager(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock,
                                 PipelineLauncher* launcher, DatasetHasher* hasher, ScheduleOptions options)
    : batch_(batch), store_(store), clock_(clock), launcher_(launcher), hasher_(hasher), options_(options) {}

Status ScheduleManager::Recover() {
  entries_.clear();
  Status bad;
  RETURN_IF_ERROR(
      store_->ScanRecords<pb::ScheduleRecord>(storage::Table::kSchedules, "", [&](const pb::ScheduleRecord& record) {
        Entry entry;
        entry.record = record;
        if (!record.cron().empty()) {
          auto cron = ParseCron(record.cron());
          if (!cron.ok()) {
            bad = DataLossError(fmt::format("stored schedule {}/{} has a cron expression that no longer parses: {}",
                                            record.team(), record.name(), cron.status().message()));
            return false;
          }
          entry.cron = std::move(*cron);
        }
        RefreshNextFire(entry);
        entries_[Key(record.team(), record.name())] = std::move(entry);
        return true;
      }));
  RETURN_IF_ERROR(bad);
  spdlog::info("recovered {} schedule(s)", entries_.size());
  return Status::Ok();
}

ScheduleManager::Entry* ScheduleManager::FindEntry(const std::string& team, const std::string& name) {
  auto it = entries_.find(Key(team, name));
  return it == entries_.end() ? nullptr : &it->second;
}

const pb::ScheduleRecord* ScheduleManager::Find(const std::string& team, const std::string& name) const {
  auto it = entries_.find(Key(team, name));
  return it == entries_.end() ? nullptr : &it->second.record;
}

std::vector<const pb::ScheduleRecord*> ScheduleManager::List(const std::string& team) const {
  std::vector<const pb::ScheduleRecord*> out;
  for (const auto& [key, entry] : entries_) {
    if (team.empty() || entry.record.team() == team) out.push_back(&entry.record);
  }
  return out;
}

void ScheduleManager::Put(Entry& entry) {
  entry.record.set_updated_ms(clock_->NowMs());
  batch_->Put(storage::Table::kSchedules, Key(entry.record.team(), entry.record.name()), entry.record);
}

void ScheduleManager::RefreshNextFire(Entry& entry) {
  entry.next_fire_ms = 0;
  if (!entry.cron || entry.record.state() != pb::SCHEDULE_ACTIVE) return;
  auto next = coordinator::NextFireTimes(*entry.cron, entry.record.time_zone(), entry.record.cursor_ms(), 1);
  if (next.ok() && !next->empty()) entry.next_fire_ms = next->front();
}

StatusOr<std::vector<int64_t>> ScheduleManager::NextFireTimes(const pb::ScheduleRecord& schedule, size_t n) const {
  if (schedule.cron().empty() || schedule.state() != pb::SCHEDULE_ACTIVE) return std::vector<int64_t>{};
  ASSIGN_OR_RETURN(CronExpression cron, ParseCron(schedule.cron()));
  const int64_t after = std::max(schedule.cursor_ms(), clock_->NowMs());
  return coordinator::NextFireTimes(cron, schedule.time_zone(), after, std::min(n, options_.max_next_fire_times));
}

StatusOr<pb::ScheduleRecord> ScheduleManager::Pause(const std::string& team, const std::string& name) {
  Entry* entry = FindEntry(team, name);
  if (entry == nullptr) return NotFoundError(fmt::format("team '{}' has no schedule '{}'", team, name));
  if (entry->record.state() == pb::SCHEDULE_PAUSED) {
    return FailedPreconditionError(fmt::format("schedule {}/{} is already paused", team, name));
  }
  entry->record.set_state(pb::SCHEDULE_PAUSED);
  RefreshNextFire(*entry);
  Put(*entry);
  return entry->record;
}

StatusOr<pb::ScheduleRecord> ScheduleManager::Resume(const std::string& team, const std::string& name) {
  Entry* entry = FindEntry(team, name);
  if (entry == nullptr) return NotFoundError(fmt::format("team '{}' has no schedule '{}'", team, name));
  if (entry->record.state() == pb::SCHEDULE_ACTIVE) {
    return FailedPreconditionError(fmt::format("schedule {}/{} is not paused (it is active)", team, name));
  }
  entry->record.set_state(pb::SCHEDULE_ACTIVE);
  // The pause's fire times are not caught up: the cursor moves to now. A data trigger checks at once.
  entry->record.set_cursor_ms(std::max(entry->record.cursor_ms(), clock_->NowMs()));
  if (entry->record.has_data_trigger()) entry->record.mutable_data_trigger()->set_last_check_ms(0);
  RefreshNextFire(*entry);
  Put(*entry);
  return entry->record;
}

StatusOr<pb::ScheduleRecord> ScheduleManager::Delete(const std::string& team, const std::string& name) {
  Entry* entry = FindEntry(team, name);
  if (entry == nullptr) return NotFoundError(fmt::format("team '{}' has no schedule '{}'", team, name));
  pb::ScheduleRecord record = entry->record;
  record.set_state(pb::SCHEDULE_DELETED);
  batch_->Delete(storage::Table::kSchedules, Key(team, name));
  entries_.erase(Key(team, name));
  return record;
}

StatusOr<pb::ScheduleRecord> ScheduleManager::Trigger(const std::string& team, const std::string& name,
                                                      const std::string& user) {
  Entry* entry = FindEntry(team, name);
  if (entry == nullptr) return NotFoundError(fmt::format("team '{}' has no schedule '{}'", team, name));
  const int64_t now = clock_->NowMs();
  pb::ScheduleFire fire;
  fire.set_fire_time_ms(now);
  fire.set_triggered_by(user);
  Fire(*entry, now, std::move(fire));
  return entry->record;
}

void ScheduleManager::AppendHistory(Entry& entry, pb::ScheduleFire fire) {
  fire.set_recorded_ms(clock_->NowMs());
  auto* history = entry.record.mutable_history();
  *history->Add() = std::move(fire);
  const int limit = static_cast<int>(options_.history_limit);
  if (history->size() > limit) history->DeleteSubrange(0, history->size() - limit);
}

void ScheduleManager::Tick() {
  const int64_t now = clock_->NowMs();
  if (hasher_ != nullptr) {
    for (auto& result : hasher_->TakeResults()) {
      auto it = entries_.find(result.key);
      if (it == entries_.end()) continue;  // deleted while hashing
      it->second.hash_in_flight = false;
      OnHash(it->second, result.hash, now);
    }
  }
  for (auto& [key, entry] : entries_) {
    if (entry.record.state() != pb::SCHEDULE_ACTIVE) continue;
    TickQueued(entry, now);
    if (entry.cron) {
      TickCron(entry, now);
    } else if (entry.record.has_data_trigger()) {
      TickDataCheck(entry, now);
    }
  }
}

int64_t ScheduleManager::NextWakeupMs() const {
  int64_t wake = std::numeric_limits<int64_t>::max();
  for (const auto& [key, entry] : entries_) {
    if (entry.record.state() != pb::SCHEDULE_ACTIVE) continue;
    if (entry.next_fire_ms > 0) wake = std::min(wake, entry.next_fire_ms);
    if (entry.record.has_data_trigger() && !entry.hash_in_flight) {
      const auto& trigger = entry.record.data_trigger();
      wake = std::min(wake, trigger.last_check_ms() + trigger.check_interval_ms());
    }
  }
  return wake;
}

void ScheduleManager::TickCron(Entry& entry, int64_t now) {
  if (entry.next_fire_ms == 0 || entry.next_fire_ms > now) return;  // the cache says nothing is due
  auto decision = DecideCronFire(entry.record, *entry.cron, now, options_.misfire_grace_ms);
  if (!decision.ok()) {
    spdlog::warn("schedule {}/{}: {}", entry.record.team(), entry.record.name(), decision.status().ToString());
    return;
  }
  if (decision->action == CronDecision::Action::kNothing) return;
  entry.record.set_cursor_ms(decision->new_cursor_ms);
  pb::ScheduleFire fire;
  fire.set_fire_time_ms(decision->fire_time_ms);
  fire.set_missed_count(decision->missed_count);
  if (decision->action == CronDecision::Action::kSkipMissed) {
    fire.set_outcome(pb::FIRE_SKIPPED_MISSED);
    fire.set_message(fmt::format("{} fire(s) missed while the coordinator was down (missed-fire policy skip)",
                                 decision->missed_count));
    entry.record.set_last_fire_ms(decision->fire_time_ms);
    AppendHistory(entry, std::move(fire));
    RefreshNextFire(entry);
    Put(entry);
    return;
  }
  if (decision->missed_count > 0) {
    const bool skipped_earlier = entry.record.missed() == pb::MISSED_SKIP;
    fire.set_message(skipped_earlier ? fmt::format("{} earlier fire(s) missed while the coordinator was down were "
                                                   "skipped (missed-fire policy skip)",
                                                   decision->missed_count)
                                     : fmt::format("stands for {} fire(s) missed while the coordinator was down "
                                                   "(missed-fire policy run-once)",
                                                   decision->missed_count));
  }
  Fire(entry, decision->fire_time_ms, std::move(fire));
  RefreshNextFire(entry);
}

void ScheduleManager::Fire(Entry& entry, int64_t fire_time_ms, pb::ScheduleFire fire) {
  const std::string previous = entry.record.last_run_id();
  const bool previous_active = !previous.empty() && launcher_->Active(previous);
  entry.record.set_last_fire_ms(fire_time_ms);
  switch (DecideConcurrency(entry.record, previous_active)) {
    case ConcurrencyAction::kStart:
      return StartRun(entry, fire_time_ms, std::move(fire));
    case ConcurrencyAction::kSkip:
      fire.set_outcome(pb::FIRE_SKIPPED_ACTIVE);
      fire.set_message(fmt::format("the previous run {} is still active (concurrency policy forbid)", previous));
      break;
    case ConcurrencyAction::kQueue:
      fire.set_outcome(pb::FIRE_QUEUED);
      fire.set_message(fmt::format("waits for the previous run {} to end (concurrency policy queue)", previous));
      entry.record.set_queued_fire_ms(fire_time_ms);
      break;
    case ConcurrencyAction::kCoalesce:
      fire.set_outcome(pb::FIRE_COALESCED);
      fire.set_message(
          fmt::format("a fire already waits for run {} (concurrency policy queue); it stands for "
                      "this one too",
                      previous));
      break;
    case ConcurrencyAction::kReplace: {
      const std::string reason = fmt::format("replaced by the fire of schedule {}/{} at {}", entry.record.team(),
                                             entry.record.name(), IsoUtc(fire_time_ms));
      if (Status st = launcher_->Cancel(previous, reason); !st.ok()) {
        spdlog::warn("schedule {}/{}: cancelling run {}: {}", entry.record.team(), entry.record.name(), previous,
                     st.ToString());
      }
      fire.set_replaced_run_id(previous);
      return StartRun(entry, fire_time_ms, std::move(fire));
    }
  }
  AppendHistory(entry, std::move(fire));
  Put(entry);
}

void ScheduleManager::StartRun(Entry& entry, int64_t fire_time_ms, pb::ScheduleFire fire) {
  const auto& record = entry.record;
  const std::string origin =
      fire.triggered_by().empty()
          ? fmt::format("schedule {}/{} fire at {}", record.team(), record.name(), IsoUtc(fire_time_ms))
          : fmt::format("schedule {}/{} triggered by {} at {}", record.team(), record.name(), fire.triggered_by(),
                        IsoUtc(fire_time_ms));
  auto run = launcher_->Create(record.pipeline_yaml(), record.team(), record.owner(), Overrides(record), origin);
  if (run.ok()) {
    fire.set_outcome(pb::FIRE_STARTED);
    fire.set_run_id(*run);
    entry.record.set_last_run_id(*run);
    entry.record.set_fire_count(entry.record.fire_count() + 1);
  } else {
    fire.set_outcome(pb::FIRE_FAILED);
    fire.set_message(fmt::format("the pipeline run was refused: {}", run.status().ToString()));
    spdlog::warn("schedule {}/{}: {}", record.team(), record.name(), fire.message());
  }
  AppendHistory(entry, std::move(fire));
  Put(entry);  // the fire record, in the same batch as the run's records
}

void ScheduleManager::TickQueued(Entry& entry, int64_t /*now*/) {
  if (entry.record.queued_fire_ms() == 0) return;
  if (!entry.record.last_run_id().empty() && launcher_->Active(entry.record.last_run_id())) return;
  const int64_t fire_time = entry.record.queued_fire_ms();
  entry.record.set_queued_fire_ms(0);
  pb::ScheduleFire fire;
  fire.set_fire_time_ms(fire_time);
  fire.set_message(fmt::format("queued: started after run {} ended", entry.record.last_run_id()));
  StartRun(entry, fire_time, std::move(fire));
}

void ScheduleManager::TickDataCheck(Entry& entry, int64_t now) {
  const auto& trigger = entry.record.data_trigger();
  if (entry.hash_in_flight || hasher_ == nullptr) return;
  if (trigger.last_check_ms() + trigger.check_interval_ms() > now) return;
  entry.hash_in_flight = true;
  hasher_->Request(Key(entry.record.team(), entry.record.name()),
                   {trigger.dataset_paths().begin(), trigger.dataset_paths().end()});
}

void ScheduleManager::OnHash(Entry& entry, const StatusOr<std::string>& hash, int64_t now) {
  auto* trigger = entry.record.mutable_data_trigger();
  trigger->set_last_check_ms(now);
  if (entry.record.state() != pb::SCHEDULE_ACTIVE) return Put(entry);
  if (!hash.ok()) {
    // Not a fire: the data could not be read (recorded once per distinct error, not at every check).
    const std::string message = fmt::format("hashing the datasets failed: {}", hash.status().ToString());
    const auto& history = entry.record.history();
    if (history.empty() || history.rbegin()->message() != message) {
      pb::ScheduleFire fire;
      fire.set_fire_time_ms(now);
      fire.set_outcome(pb::FIRE_FAILED);
      fire.set_message(message);
      AppendHistory(entry, std::move(fire));
    }
    return Put(entry);
  }
  if (*hash == trigger->last_hash()) return Put(entry);
  pb::ScheduleFire fire;
  fire.set_fire_time_ms(now);
  fire.set_data_hash(*hash);
  const bool baseline = trigger->last_hash().empty();
  trigger->set_last_hash(*hash);
  if (baseline) {
    fire.set_outcome(pb::FIRE_BASELINE);
    fire.set_message("first check: the datasets' hash is the baseline; a change from it fires");
    AppendHistory(entry, std::move(fire));
    return Put(entry);
  }
  Fire(entry, now, std::move(fire));  // the new hash and the run: one batch
}

}  // namespace anneal::coordinator
