// MetricsLogger: the trainer's reporting component. On rank 0 it averages the loss over a logging window and,
// every logging_steps and at the last step, appends LLaMA-Factory's fields to <output_dir>/trainer_log.jsonl
// and emits a `metrics` event; validation results become an `eval` entry and event. Other ranks report nothing.
//
// Throughput counts only this attempt's tokens over this attempt's time: after a resume the restored steps'
// tokens are in total_tokens, never in tokens/s.
//
// Thread-safety: one thread at a time.
//
// Example:
//   MetricsLogger logger(spec.train, rt, events, out);
//   logger.StartAttempt(progress);      // after any resume
//   logger.Record(progress, result);    // every step
#pragma once

#include <chrono>
#include <string>

#include "jobspec/jobspec.h"
#include "trainer/train/events.h"
#include "trainer/train/progress.h"
#include "trainer/train/runtime.h"

namespace anneal::train {

class MetricsLogger {
 public:
  MetricsLogger(const jobspec::TrainSpec& train, const Runtime& rt, const EventSink& events, const std::string& out);

  // Starts this attempt's clock; after a resume, drops trainer_log.jsonl entries past the resumed step.
  void StartAttempt(const Progress& p);
  // One step's result; writes the window's mean when logging is due.
  void Record(const Progress& p, const StepResult& r);
  void RecordEval(const Progress& p, double eval_loss);

 private:
  bool Due(const Progress& p) const;

  const jobspec::TrainSpec* train_;
  const Runtime* rt_;
  const EventSink* events_;
  TrainerLog log_;
  bool leader_;
  std::chrono::steady_clock::time_point start_;
  double window_loss_ = 0;
  int64_t window_steps_ = 0;
};

}  // namespace anneal::train
