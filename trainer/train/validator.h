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
#include <string>
#include <utility>
#include <vector>

#include "jobspec/jobspec.h"
#include "trainer/model/decoder.h"
#include "trainer/train/pair_stage.h"
#include "trainer/train/progress.h"
#include "trainer/train/rows.h"
#include "trainer/train/runtime.h"

namespace anneal::train {

// Validation loss over `rows` (sum of token losses / label tokens): positions dealt out over data parallel in
// micro-batches of `batch` rows and run through the pipeline. NaN when there are no label tokens.
double EvalLoss(model::CausalLM& lm, const TrainRows& rows, int batch, const Runtime& rt);
// Stages dpo and rm: the pairwise loss averaged over every validation pair (HF's evaluation loop: each batch's
// mean loss weighted by its size), `batch` pairs per micro-batch. `metrics` (optional) receives the stage's
// evaluation metrics over every pair of every rank, named eval_<name> (stage rm: eval_accuracy).
double EvalPairLoss(PairStage& stage, model::CausalLM& lm, const TrainRows& rows, int batch, const Runtime& rt,
                    std::vector<std::pair<std::string, double>>* metrics = nullptr);

// The metrics of a pair stage's micro-batches since the last call (PairStage::TakeMetrics), each averaged over the
// ranks that computed them (the last pipeline stage's: zeros under the same names elsewhere). Every rank calls it.
std::vector<std::pair<std::string, double>> PairStageMetrics(PairStage& stage, const Runtime& rt);

class Validator {
 public:
  Validator(const jobspec::TrainSpec& train, TrainRows rows, const Runtime& rt)
      : train_(&train), rows_(std::move(rows)), rt_(&rt) {}
  // Under expert parallelism every rank of an expert-parallel group must run as many evaluation forwards as
  // the others (each forward is an all-to-all over the group): an error naming the sizes when the validation
  // rows do not split into equal micro-batch counts per data-parallel rank.
  Status CheckEqualShares() const;

  // Stages dpo and rm: validate with the pairwise loss (borrowed; outlives the validator).
  void set_pair_stage(PairStage* stage) { pair_stage_ = stage; }

  bool Due(const Progress& p) const;
  // The validation loss when Due, else nothing.
  std::optional<double> MaybeEvaluate(model::CausalLM& lm, const Progress& p) const;
  // The metrics besides the loss of the last evaluation (stage rm: eval_accuracy); empty after the call.
  std::vector<std::pair<std::string, double>> TakeEvalMetrics() const { return std::exchange(eval_metrics_, {}); }

 private:
  const jobspec::TrainSpec* train_;
  TrainRows rows_;
  const Runtime* rt_;
  PairStage* pair_stage_ = nullptr;
  mutable std::vector<std::pair<std::string, double>> eval_metrics_;
};

}  // namespace anneal::train
