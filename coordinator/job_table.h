// JobTable: the coordinator's jobs in memory (every non-terminal job), the pending queue, the job events, and
// their persistence into the round's WriteBatch. The one place that builds a JobEvent.
//
// Contract per method (every change goes into the borrowed batch; the Coordinator commits it in Flush):
//   Recover        loads the counters and every job with an active/<id> key. Call once, before anything else.
//   Submit         numbers a new job (job-000001, ...), enters it PENDING with its "submitted" event.
//   Transition     one edge of coordinator/job_state_machine.h with its "state" event; keeps the queue, the
//                  active/<id> index and the timestamps; a terminal job leaves the table after the commit.
//                  An edge the diagram does not have is a programmer error (ANNEAL_CHECK).
//   AddEvent       an event of another kind ("error", "checkpoint", "placement", ...) in the current state.
//   SetTaskState   a task's new state; a task that already ended never changes again. Returns true when the
//                  task ended with this call (the caller releases its slots).
//   NextEpoch      the next launch epoch (global and strictly increasing; persisted).
//   WriteChanged   puts every record changed this round into the batch, once each (call before the commit).
//   EraseEnded     after the commit: drops the terminal jobs and returns their ids.
// Records are only ever changed through these methods or through Find()'s record followed by MarkChanged.
//
// Thread-safety: none; the coordinator's loop owns it.
// Ownership: borrows the batch, the store and the clock; all must outlive it.
//
// Example:
//   JobTable jobs(&batch, store, &clock);
//   RETURN_IF_ERROR(jobs.Recover(stop_timeout_ms));
//   Job& job = jobs.Submit(std::move(record));        // PENDING, with its event
//   jobs.Transition(job, pb::JOB_STARTING, "placed on n1");
//   jobs.WriteChanged(); store->Commit(batch); for (auto& id : jobs.EraseEnded()) ...
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

// One job in memory.
struct Job {
  pb::JobRecord record;
  std::optional<uint64_t> last_metric_step;
  int64_t stop_deadline_ms = 0;                      // RESTARTING / CANCELLING: StopTask unconfirmed until then
  std::map<std::string, int64_t> task_last_seen_ms;  // node -> last sign of the job's task there
  std::map<std::string, int64_t> disconnected_ms;    // node (DOWN, task kept: reconnect grace) -> since when
  std::string wait_reason;                           // last "not placed" reason (evented once)
};

class JobTable {
 public:
  JobTable(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock);

  // `stop_timeout_ms`: RESTARTING and CANCELLING jobs get a fresh stop deadline (their StopTasks are resent).
  Status Recover(int64_t stop_timeout_ms);

  // `record` carries the spec, resources and scheduling fields; the table sets the id, submit_seq, the event
  // counter and the submit time.
  Job& Submit(pb::JobRecord record);
  void Transition(Job& job, pb::JobState to, const std::string& message);
  void AddEvent(Job& job, const std::string& kind, const std::string& message);
  bool SetTaskState(Job& job, const std::string& node_id, pb::TaskState state);
  void MarkChanged(const Job& job) { changed_.insert(job.record.job_id()); }
  uint64_t NextEpoch();

  Job* Find(const std::string& job_id);
  const Job* Find(const std::string& job_id) const;
  // The job's record, in memory or from the store; NOT_FOUND "no job '<id>'".
  StatusOr<pb::JobRecord> GetRecord(const std::string& job_id) const;
  // Every job in memory by id (terminal ones only until the commit of their last transition).
  std::map<std::string, Job>& all() { return jobs_; }
  const std::map<std::string, Job>& all() const { return jobs_; }
  // PENDING job ids in scheduling order: priority (high first), then submission order.
  std::vector<std::string> PendingInOrder() const;
  size_t PendingCount() const { return queue_.size(); }
  // Whether a job entered the queue since the last call (the scheduler has work).
  bool TakeQueueGrew();

  void WriteChanged();
  std::vector<std::string> EraseEnded();

 private:
  using QueueKey = std::tuple<int64_t, uint64_t, std::string>;  // (-priority, submit_seq, job id)
  static QueueKey KeyOf(const pb::JobRecord& record);
  void AppendEvent(Job& job, const std::string& kind, pb::JobState from, pb::JobState to, const std::string& message);
  Status Load(const pb::JobRecord& record, int64_t stop_timeout_ms);

  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  const Clock* clock_;
  std::map<std::string, Job> jobs_;
  std::set<QueueKey> queue_;
  std::set<std::string> changed_;   // records to write in this round's batch (once each)
  std::vector<std::string> ended_;  // terminal jobs leave jobs_ after the commit
  bool queue_grew_ = false;
  uint64_t next_job_number_ = 1;
  uint64_t next_epoch_ = 1;
};

}  // namespace anneal::coordinator
