// Where a run stands, shared by the trainer's components (checkpointer, validator, metrics logger), each of which
// decides for itself when to act on it.
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace anneal::train {

struct Progress {
  int64_t step = 0;  // optimizer steps done (all attempts)
  int64_t total_steps = 0;
  int64_t steps_per_epoch = 1;
  int64_t consumed = 0;        // samples consumed: the sampler position (all data-parallel ranks together)
  int64_t train_rows = 1;      // rows (or packing bins) in one epoch
  int64_t total_tokens = 0;    // this rank's input tokens over the whole run (restored on resume)
  int64_t start_step = 0;      // where this attempt started (0, or the resumed checkpoint's step)
  int64_t attempt_tokens = 0;  // this rank's input tokens in this attempt alone: what throughput counts
  // The best evaluation so far (early_stopping.h; kept in checkpoints): its metric, its step, and the evaluations
  // since it without improvement.
  std::optional<double> best_metric;
  int64_t best_step = 0;
  int64_t evals_without_improvement = 0;

  bool last() const { return step == total_steps; }
  bool epoch_end() const { return steps_per_epoch > 0 && step % steps_per_epoch == 0; }
  double epoch() const { return static_cast<double>(consumed) / static_cast<double>(train_rows); }
};

// What one optimizer step measured.
struct StepResult {
  double loss = 0;       // mean token loss of the global batch
  double grad_norm = 0;  // before clipping
  double lr = 0;         // the schedule's learning rate after this step (what LLaMA-Factory logs)
  // Stage dpo: rewards/chosen, rewards/accuracies, logps/rejected, ... (preference.h), logged with the loss.
  std::vector<std::pair<std::string, double>> metrics;
};

}  // namespace anneal::train
