// The trainer's reports: events to the launcher (newline-delimited JSON on ANNEAL_EVENTS_FD,
// docs/trainer-contract.md) and LLaMA-Factory's trainer_log.jsonl in the output directory.
//
// Thread-safety: Emit/Append may be called from one thread at a time.
//
// Example:
//   EventSink events = EventSink::FromEnvironment(rank);
//   events.Emit("metrics", {{"step", 10}, {"values", {{"loss", 2.1}}}});
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace anneal::train {

class EventSink {
 public:
  // Uses the fd in ANNEAL_EVENTS_FD if set and valid; otherwise events are dropped.
  static EventSink FromEnvironment(int rank);
  EventSink() = default;
  // Adds "type", "rank" and "time_ms", then writes one line with a single write(2).
  void Emit(const std::string& type, nlohmann::json fields) const;
  bool enabled() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  int rank_ = 0;
};

int64_t NowMs();
// "0:01:23" as LLaMA-Factory writes elapsed_time / remaining_time.
std::string FormatDuration(double seconds);

// Appends one JSON object per line to <output_dir>/trainer_log.jsonl.
class TrainerLog {
 public:
  explicit TrainerLog(std::string path) : path_(std::move(path)) {}
  void Append(const nlohmann::json& entry) const;
  // Keeps only entries with current_steps <= step (after a resume from an earlier checkpoint).
  void TruncateAfter(int64_t step) const;

 private:
  std::string path_;
};

}  // namespace anneal::train
