// EarlyStopping: the trainer's best-metric component, as HF's Trainer and its EarlyStoppingCallback (what
// LLaMA-Factory's `early_stopping_steps` installs) behave with threshold 0:
//
//   after each evaluation (metric = eval_loss, metric_for_best_model; lower is better unless greater_is_better):
//     improved = no best yet, or metric strictly better than the best so far
//     evals_without_improvement = improved ? 0 : evals_without_improvement + 1
//     if improved: best = metric, best_step = this step
//     stop when early_stopping_steps > 0 and evals_without_improvement >= early_stopping_steps
//
// The state lives in Progress (best_metric, best_step, evals_without_improvement) and in every checkpoint's
// metadata, so a resumed run stops where the uninterrupted one would. With load_best_model_at_end the trainer
// exports the weights of checkpoint-<best_step> (every evaluation step is a save step: jobspec checks it).
// Inactive (Observe never stops, nothing tracked) when neither key is set.
//
// Thread-safety: a plain value.
//
// Example:
//   EarlyStopping stopping(spec.train);
//   if (eval_loss && stopping.Observe(*eval_loss, &progress)) break;  // patience spent
#pragma once

#include <string>

#include "jobspec/jobspec.h"
#include "trainer/train/progress.h"

namespace anneal::train {

class EarlyStopping {
 public:
  explicit EarlyStopping(const jobspec::TrainSpec& train)
      : patience_(train.early_stopping_steps),
        load_best_(train.load_best_model_at_end),
        greater_is_better_(train.greater_is_better) {}

  bool tracks() const { return patience_ > 0 || load_best_; }
  bool load_best() const { return load_best_; }
  // Records an evaluation at p->step; true when training should stop.
  bool Observe(double metric, Progress* p) const;
  // "eval_loss has not improved for 3 evaluation(s) (best 1.2345 at step 24)"
  std::string Describe(const Progress& p) const;

 private:
  int64_t patience_ = 0;
  bool load_best_ = false;
  bool greater_is_better_ = false;
};

}  // namespace anneal::train
