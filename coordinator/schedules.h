// Schedules: pipelines run at cron times or when datasets change, each fire exactly once (issue 16).
//
// A schedule (pb::ScheduleRecord, Table::kSchedules, key "<team>/<name>") belongs to a team and runs its stored
// pipeline YAML (validated at create) as its owner, with its `--set` overrides, either
//   - at the fire times of a cron expression in a time zone (coordinator/cron.h), or
//   - when the content hash of its datasets changes, checked every check_interval_ms (a data trigger).
//
// Lifecycle:
//                 pause                      delete
//   create ──► ACTIVE ──────► PAUSED ──────────────► DELETED (the record is erased; the name is free again)
//                │  ◄──────── │
//                │   resume   │
//                └────────────┴── delete ──► DELETED
//   pause of a paused, resume of an active schedule: FAILED_PRECONDITION; anything on a deleted (absent)
//   schedule: NOT_FOUND. Only ACTIVE schedules fire. Resume does not catch up on the pause: its cron cursor
//   moves to the resume time; a data trigger checks soon after and fires if the data changed meanwhile.
//   Trigger (`anneal schedule trigger`, "run now") fires an ACTIVE or PAUSED schedule at once, by hand: it changes
//   no state, no cron cursor and no data baseline, so the scheduled fires happen as they would have.
//
// Exactly once (cron): the record holds a cursor, the instant up to which every fire time was handled.
// DecideCronFire (pure) takes the fire times in (cursor, now] and decides; Tick applies the decision by writing
// the new cursor, the history entry AND the pipeline run (PipelineLauncher::Create, which writes into the same
// round batch) into the coordinator's WriteBatch. The batch commits atomically, so a kill -9 before the commit
// leaves the fire due again (it runs after restart) and a kill after it leaves it recorded (it never runs
// again): neither skipped nor doubled. Data triggers do the same with the last recorded hash.
//
// Missed fires: a fire time is late when now - fire time > misfire_grace_ms (the coordinator was down). If the
// latest due fire is on time it runs; earlier due ones were missed. If all are late, policy run-once starts one
// run standing for them all, policy skip records them as skipped and runs nothing. Either way the cursor moves
// past all of them, so they are decided once.
//
// Concurrency (when a fire finds the schedule's previous run still active): forbid records the fire as
// skipped; queue records it as waiting (at most one waits; a later fire coalesces into it) and starts it when
// the previous run ends; replace cancels the previous run and starts the new one in the same batch.
//
// Data triggers: hashing datasets can take long, so the manager asks a DatasetHasher (which may hash on its
// own thread) and handles the result at a later Tick. The first hash is a baseline (FIRE_BASELINE): it runs
// nothing, so retraining happens when data changes after the schedule was created.
//
// Thread-safety: none; the coordinator's event loop owns it (a DatasetHasher may work on other threads).
// Ownership: borrows the batch, store, clock, launcher and hasher; all outlive it.
//
// Example:
//   ScheduleManager schedules(&batch, store, &clock, &launcher, &hasher, {});
//   RETURN_IF_ERROR(schedules.Recover());
//   ASSIGN_OR_RETURN(pb::ScheduleRecord created, schedules.Create(request.create_schedule(), "nlp", "alice"));
//   schedules.Tick();               // each round: starts due fires (records + runs in `batch`)
//   store->Commit(batch);           // the coordinator's Flush
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/cron.h"
#include "coordinator/limits.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

// What the schedules need from pipelines (coordinator/pipelines.h); the Coordinator adapts its members.
// Every call runs on the loop; Create writes its records into the same round batch as the fire record.
class PipelineLauncher {
 public:
  virtual ~PipelineLauncher() = default;
  // The YAML and overrides would be accepted for `team` as `owner` (at create; nothing is written).
  virtual Status Validate(const std::string& yaml, const std::string& team, const std::string& owner,
                          const std::map<std::string, std::string>& overrides) = 0;
  // Creates a run; its id. `origin` names the schedule and fire ("schedule nlp/weekly at 2026-...").
  virtual StatusOr<std::string> Create(const std::string& yaml, const std::string& team, const std::string& owner,
                                       const std::map<std::string, std::string>& overrides,
                                       const std::string& origin) = 0;
  virtual bool Active(const std::string& run_id) const = 0;
  virtual Status Cancel(const std::string& run_id, const std::string& reason) = 0;
};

// Content hashes of dataset paths, computed when asked and handed back later (possibly from another thread).
class DatasetHasher {
 public:
  struct Result {
    std::string key;  // the schedule's "<team>/<name>"
    StatusOr<std::string> hash;
  };
  virtual ~DatasetHasher() = default;
  virtual void Request(const std::string& key, const std::vector<std::string>& paths) = 0;
  virtual std::vector<Result> TakeResults() = 0;  // the results finished since the last call
};

// The decision for one cron schedule at `now` (pure: DecideCronFire).
struct CronDecision {
  enum class Action {
    kNothing,     // no fire time in (cursor, now], or the schedule is not active
    kRun,         // start a run for fire_time_ms (subject to the concurrency policy)
    kSkipMissed,  // policy skip: the due fires were all missed; record them, run nothing
  };
  Action action = Action::kNothing;
  int64_t fire_time_ms = 0;   // the latest due fire time: what the run or the skip is recorded as
  uint64_t missed_count = 0;  // due fires that were late (the coordinator was down)
  int64_t new_cursor_ms = 0;  // = fire_time_ms when anything was due
};
StatusOr<CronDecision> DecideCronFire(const pb::ScheduleRecord& schedule, const CronExpression& cron, int64_t now_ms,
                                      int64_t misfire_grace_ms);

// What a fire does given whether the schedule's previous run is still active (pure).
enum class ConcurrencyAction { kStart, kSkip, kQueue, kCoalesce, kReplace };
ConcurrencyAction DecideConcurrency(const pb::ScheduleRecord& schedule, bool previous_active);

struct ScheduleOptions {
  int64_t misfire_grace_ms = 60'000;       // a fire later than this counts as missed (coordinator config)
  int64_t min_check_interval_ms = 10'000;  // data triggers: the shortest check interval accepted
  size_t history_limit = 20;               // fires kept per schedule
  size_t max_next_fire_times = 100;        // `anneal schedule next -n` at most
};

// The bounds of the schedule requests (called from CheckClientRequestLimits).
Status CheckScheduleRequestLimits(const pb::ClientRequest& request, const Limits& limits);

class ScheduleManager {
 public:
  ScheduleManager(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock,
                  PipelineLauncher* launcher, DatasetHasher* hasher, ScheduleOptions options);

  Status Recover();  // loads every schedule (their cron expressions parsed again)

  // Validates (name, cron or data trigger, time zone, the pipeline through the launcher) and stores a new
  // ACTIVE schedule owned by `owner`. ALREADY_EXISTS when the team has one of that name; INVALID_ARGUMENT
  // naming the field otherwise. `check_paths` (may be null) vets the dataset paths for the team.
  using PathCheck = std::function<Status(const std::string& team, const std::string& path)>;
  StatusOr<pb::ScheduleRecord> Create(const pb::CreateScheduleRequest& request, const std::string& team,
                                      const std::string& owner, const PathCheck& check_paths = nullptr);
  StatusOr<pb::ScheduleRecord> Pause(const std::string& team, const std::string& name);
  StatusOr<pb::ScheduleRecord> Resume(const std::string& team, const std::string& name);
  StatusOr<pb::ScheduleRecord> Delete(const std::string& team, const std::string& name);  // the record, DELETED
  // Fires now, by hand, as `user` asked (recorded as triggered_by; the run's origin says so). The concurrency
  // policy applies as to any fire: the reply's newest history entry says what happened (FIRE_STARTED with the
  // run, FIRE_SKIPPED_ACTIVE, FIRE_QUEUED, ...). NOT_FOUND for an absent schedule. The run runs as the owner.
  StatusOr<pb::ScheduleRecord> Trigger(const std::string& team, const std::string& name, const std::string& user);

  const pb::ScheduleRecord* Find(const std::string& team, const std::string& name) const;
  std::vector<const pb::ScheduleRecord*> List(const std::string& team) const;  // "" = all, by team then name
  // The next `n` fire times of an ACTIVE cron schedule (empty for paused ones and data triggers).
  StatusOr<std::vector<int64_t>> NextFireTimes(const pb::ScheduleRecord& schedule, size_t n) const;

  // Handles every due fire, queued fire and finished hash. Call once per round, before the batch commits.
  void Tick();
  // The earliest instant a cron fire, a data check or a queued fire may need Tick (INT64_MAX: none).
  int64_t NextWakeupMs() const;

  static std::string Key(const std::string& team, const std::string& name) { return team + "/" + name; }

 private:
  struct Entry {
    pb::ScheduleRecord record;
    std::optional<CronExpression> cron;
    int64_t next_fire_ms = 0;  // cron: cached first fire time after the cursor (0: none)
    bool hash_in_flight = false;
  };
  Entry* FindEntry(const std::string& team, const std::string& name);
  void Put(Entry& entry);
  void RefreshNextFire(Entry& entry);
  void AppendHistory(Entry& entry, pb::ScheduleFire fire);
  void TickCron(Entry& entry, int64_t now);
  void TickQueued(Entry& entry, int64_t now);
  void TickDataCheck(Entry& entry, int64_t now);
  void OnHash(Entry& entry, const StatusOr<std::string>& hash, int64_t now);
  // Applies the concurrency policy to a fire and records it (history, last fire, run).
  void Fire(Entry& entry, int64_t fire_time_ms, pb::ScheduleFire fire);
  void StartRun(Entry& entry, int64_t fire_time_ms, pb::ScheduleFire fire);

  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  const Clock* clock_;
  PipelineLauncher* launcher_;
  DatasetHasher* hasher_;
  ScheduleOptions options_;
  std::map<std::string, Entry> entries_;  // by Key(team, name)
};

}  // namespace anneal::coordinator
