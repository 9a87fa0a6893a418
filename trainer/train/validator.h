// Validator: the trainer's validation component. It decides when the validation loss is due (eval_strategy
// "steps": every eval_steps (logging_steps when 0) and at the last step; "epoch": at each epoch's end and the
// last step; "no": never; with no validation rows: never) and computes it, over the val_size split or the
// eval_dataset.
//
// Thread-safety: one thread at a time; Evaluate is a collective over the world group (every rank calls it).
//
// Example:
//   Validator validator(spec.train, TrainRows::ForValidation(data, spec.data), rt);
//   std::optional<double> eval_loss = validator.MaybeEvaluate(lm, progress);
#pragma once

#include <optional>

#include "jobspec/jobspec.h"
#include "trainer/model/decoder.h"
#include "trainer/train/preference.h"
#include "trainer/train/progress.h"
#include "trainer/train/rows.h"
#include "trainer/train/runtime.h"

namespace anneal::train {

// Validation loss over `rows` (sum of token losses / label tokens): positions dealt out over data parallel in
// micro-batches of `batch` rows and run through the pipeline. NaN when there are no label tokens.
double EvalLoss(model::CausalLM& lm, const TrainRows& rows, int batch, const Runtime& rt);
// Stage dpo: the preference loss averaged over every validation pair (HF's evaluation loop: each batch's mean
// loss weighted by its size), `batch` pairs per micro-batch.
double EvalPreferenceLoss(PreferenceTrainer& preference, model::CausalLM& lm, const TrainRows& rows, int batch,
                          const Runtime& rt);

class Validator {
 public:
  Validator(const jobspec::TrainSpec& train, TrainRows rows, const Runtime& rt)
      : train_(&train), rows_(std::move(rows)), rt_(&rt) {}

  // Stage dpo: validate with the preference loss (borrowed; outlives the validator).
  void set_preference(PreferenceTrainer* preference) { preference_ = preference; }

  bool Due(const Progress& p) const;
  // The validation loss when Due, else nothing.
  std::optional<double> MaybeEvaluate(model::CausalLM& lm, const Progress& p) const;

 private:
  const jobspec::TrainSpec* train_;
  TrainRows rows_;
  const Runtime* rt_;
  PreferenceTrainer* preference_ = nullptr;
};

}  // namespace anneal::train
