// Trainer events -> coordinator reports.
//
// The trainer writes newline-delimited JSON on ANNEAL_EVENTS_FD (docs/trainer-contract.md). ParseTrainerEvent
// turns one line into what the agent does with it: a report to spool and send (MetricBatch for metrics,
// eval, message and preempted events; CheckpointCommitted for checkpoint events), or a fact about the rank
// (started, finished with status and message). LineSplitter cuts a byte stream from a pipe into whole lines.
//
// Thread-safety: pure functions and a value type.
//
// Example:
//   LineSplitter lines;
//   for (auto& line : lines.Feed(bytes_from_pipe)) {
//     auto ev = ParseTrainerEvent(line, identity);
//     if (!ev.ok()) { spdlog::warn("{}", ev.status().message()); continue; }
//     if (ev->report) spool.Append(&*ev->report);
//   }
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::agent {

struct TaskIdentity {
  std::string job_id;
  uint32_t attempt = 0;
  uint64_t epoch = 0;
  std::string node_id;
};

struct TrainerEvent {
  // started, metrics, eval, checkpoint, message, preempted, finished (others are kept, not acted on)
  std::string type;
  int rank = -1;
  int64_t time_ms = 0;
  int pid = 0;                                   // started
  std::string finished_status;                   // finished: "ok" or an error kind
  std::string message;                           // finished / message text
  std::optional<pb::AgentToCoordinator> report;  // seq unset; to spool and send
};

// Parses one event line. INVALID_ARGUMENT (naming the rank's line) for malformed JSON or missing fields.
StatusOr<TrainerEvent> ParseTrainerEvent(std::string_view line, const TaskIdentity& id);

// Accumulates bytes and yields complete lines (without '\n'). A line longer than `max_line` is dropped
// (reported in dropped()) so a runaway writer cannot grow memory without bound.
class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line = 1 << 20) : max_line_(max_line) {}
  std::vector<std::string> Feed(std::string_view bytes);
  // Whatever is left without a trailing newline (the writer died mid-line).
  std::string TakeRest();
  size_t dropped() const { return dropped_; }

 private:
  size_t max_line_;
  std::string partial_;
  bool skipping_ = false;
  size_t dropped_ = 0;
};

}  // namespace anneal::agent
