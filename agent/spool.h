// Spool: the agent's durable outbox of sequenced reports (TaskUpdate, MetricBatch, CheckpointCommitted,
// CheckpointDeleted), kept on disk until the coordinator acknowledges them, so a coordinator outage or an
// agent restart loses nothing.
//
// Layout under the spool directory (<work dir>/spool/):
//   reports.log  append-only records: 4-byte big-endian length + serialized pb::AgentToCoordinator.
//                Each append is fdatasync'd before the report is sent. A torn last record (crash mid-write)
//                is cut off at open.
//   acked        the highest acknowledged seq, as decimal text (written to acked.tmp, fsync'd, renamed).
// Sequence numbers increase per agent and survive restarts: the next seq is one past the highest of the
// acked watermark and every seq in reports.log. Ack(seq) is cumulative (every report with seq <= it is
// done), matching RegisterReply.last_acked_seq. Once everything is acknowledged the log is truncated; a
// long-lagging log is rewritten with the pending records only.
// Seqs stay below kMaxReportSeq (2^63), so numbering never wraps around: an unreadable `acked` file counts
// as 0 (a warning; the coordinator drops what it already applied and its RegisterReply restores the
// watermark), a record whose seq is not above the previous one is cut off like a torn tail, and a
// coordinator watermark at or above the bound is refused (INVALID_ARGUMENT).
//
// Size limit (max_bytes, the agent's spool_max_bytes; 0 = none): when an append would grow reports.log past
// it, the log is first compacted (acknowledged records dropped). If it is still full:
//   - a MetricBatch is refused (RESOURCE_EXHAUSTED, counted in dropped_metric_batches(), logged as a warning
//     on the first drop and every 100th): metrics are the bulk and are sampled anyway, and refusing the newest
//     keeps the pending seqs contiguous (nothing already sent is renumbered or skipped);
//   - a TaskUpdate, CheckpointCommitted or CheckpointDeleted is never dropped: it is appended beyond the limit
//     (with a warning) since the job state machine and retention depend on it, and these are few and small.
//
// Thread-safety: not synchronized; owned and used by the agent's event loop.
//
// Example:
//   ASSIGN_OR_RETURN(auto spool, Spool::Open(work_dir + "/spool"));
//   pb::AgentToCoordinator msg; msg.mutable_task_update()->...;
//   ASSIGN_OR_RETURN(uint64_t seq, spool->Append(&msg));   // msg now carries seq
//   Send(msg);  ... on pb::Ack{seq}: spool->Ack(seq);
//   after reconnect: for (auto& m : spool->Pending()) Send(m);
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::agent {

// The seq of a sequenced report (0 for unsequenced bodies such as Heartbeat).
uint64_t ReportSeq(const pb::AgentToCoordinator& msg);
// Sets the seq of a sequenced report; false for a body that carries none.
bool SetReportSeq(pb::AgentToCoordinator* msg, uint64_t seq);

inline constexpr uint64_t kMaxReportSeq = uint64_t{1} << 63;

class Spool {
 public:
  // max_bytes: the size limit of reports.log (0: unlimited).
  static StatusOr<std::unique_ptr<Spool>> Open(const std::string& dir, uint64_t max_bytes = 0);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Gives `msg` the next seq, appends it durably and keeps it pending. INVALID_ARGUMENT for an unsequenced
  // body; RESOURCE_EXHAUSTED for a MetricBatch when the spool is full (see above; msg gets no seq). A failed disk
  // write is logged and the report is kept pending in memory only.
  StatusOr<uint64_t> Append(pb::AgentToCoordinator* msg);
  // Acknowledges every pending report with seq <= `seq`.
  Status Ack(uint64_t seq);
  // The coordinator knows seqs up to `coordinator_acked` that this spool never issued (the spool was lost):
  // pending reports are renumbered after it so the coordinator does not drop them as duplicates.
  Status AdoptCoordinatorWatermark(uint64_t coordinator_acked);

  const std::deque<pb::AgentToCoordinator>& Pending() const { return pending_; }
  uint64_t last_acked() const { return last_acked_; }
  uint64_t next_seq() const { return next_seq_; }
  uint64_t file_bytes() const { return file_bytes_; }
  uint64_t dropped_metric_batches() const { return dropped_metric_batches_; }

 private:
  Spool(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  // Compacts, then says whether `bytes` more fit under max_bytes_.
  bool Fits(uint64_t bytes);
  Status Load();
  Status WriteAcked();
  Status Rewrite();  // reports.log := the pending records only

  std::string dir_;
  int fd_ = -1;  // reports.log, O_APPEND
  std::deque<pb::AgentToCoordinator> pending_;
  uint64_t last_acked_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t records_in_file_ = 0;
  uint64_t max_bytes_ = 0;
  uint64_t file_bytes_ = 0;  // size of reports.log
  uint64_t dropped_metric_batches_ = 0;
};

}  // namespace anneal::agent
