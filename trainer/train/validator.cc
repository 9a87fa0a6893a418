#include "trainer/train/validator.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "trainer/train/pipeline.h"

namespace anneal::train {

namespace {

// This rank's share of `rows` (positions rank, rank + dp, ...) in micro-batches of `batch` rows, on the device.
std::vector<Batch> RankMicroBatches(const TrainRows& rows, int batch, const Runtime& rt) {
  std::vector<Batch> micro;
  std::vector<int64_t> part;
  for (int64_t p = rt.dp_rank; p < rows.size(); p += rt.dp) {
    part.push_back(p);
    if (static_cast<int>(part.size()) == batch) {
      micro.push_back(Prepare(rows.Make(part), rt, rows.pad_id));
      part.clear();
    }
  }
  if (!part.empty()) micro.push_back(Prepare(rows.Make(part), rt, rows.pad_id));
  return micro;
}

}  // namespace

std::vector<std::pair<std::string, double>> PairStageMetrics(PairStage& stage, const Runtime& rt) {
  std::vector<std::pair<std::string, double>> metrics = stage.TakeMetrics();
  if (!rt.stage.last) {
    metrics.clear();  // a pipeline stage before the last computed none: zeros under the same names
    for (const std::string& name : stage.MetricNames()) metrics.emplace_back(name, 0.0);
  }
  // Averaged over the ranks of the last pipeline stage (every data- and tensor-parallel rank holds them).
  const double holders = static_cast<double>(rt.world / rt.dims.pp());
  for (auto& [name, value] : metrics) value = rt.SumOverWorld(value, rt.stage.last) / holders;
  return metrics;
}

double EvalLoss(model::CausalLM& lm, const TrainRows& rows, int batch, const Runtime& rt) {
  lm->eval();
  const std::vector<Batch> micro = RankMicroBatches(rows, batch, rt);
  auto [sum, count] = EvalMicroBatches(lm, micro, rt.stage_context());
  lm->train();
  const bool counts = rt.stage.last && rt.tp_rank == 0;
  const double total = rt.SumOverWorld(sum, counts), tokens = rt.SumOverWorld(static_cast<double>(count), counts);
  return tokens > 0 ? total / tokens : std::nan("");
}

double EvalPairLoss(PairStage& stage, model::CausalLM& lm, const TrainRows& rows, int batch, const Runtime& rt,
                    std::vector<std::pair<std::string, double>>* metrics) {
  lm->eval();
  auto [sum, pairs] = stage.EvalMicroBatches(RankMicroBatches(rows, batch, rt), rt.stage_context());
  lm->train();
  // The training step's metrics are taken already: these are the evaluation batches' (every rank calls),
  // averaged over the ranks as the training metrics.
  if (stage.LogsEvalMetrics()) {
    for (const auto& [name, value] : PairStageMetrics(stage, rt)) {
      if (metrics != nullptr) metrics->emplace_back("eval_" + name, value);
    }
  } else {
    stage.TakeMetrics();
  }
  const double total = rt.SumOverWorld(sum, true), count = rt.SumOverWorld(static_cast<double>(pairs), true);
  for (const auto& [name, part] : stage.TakeEvalSums()) {  // every rank calls: the same sums in the same order
    const double all = rt.SumOverWorld(part, true);
    if (metrics != nullptr) metrics->emplace_back("eval_" + name, count > 0 ? all / count : std::nan(""));
  }
  return count > 0 ? total / count : std::nan("");
}

Status Validator::CheckEqualShares() const {
  if (rt_->ep <= 1 || rows_.size() == 0) return Status::Ok();
  const int64_t n = rows_.size(), dp = rt_->dp, batch = std::max(1, train_->per_device_eval_batch_size);
  auto micro_batches = [&](int64_t d) { return ((n - d + dp - 1) / dp + batch - 1) / batch; };
  if (micro_batches(0) == micro_batches(dp - 1)) return Status::Ok();
  return InvalidArgumentError(
      "expert_model_parallel_size " + std::to_string(rt_->ep) + ": the " + std::to_string(n) +
      " validation rows give the " + std::to_string(dp) +
      " data-parallel ranks unequal numbers of evaluation "
      "batches (per_device_eval_batch_size " +
      std::to_string(batch) +
      "), and every forward is an all-to-all over the expert-parallel group: choose val_size (or the eval "
      "dataset) as a multiple of " +
      std::to_string(dp * batch));
}

// HF's DefaultFlowCallback: steps = every eval_steps (logging_steps when 0, as HF's None) and at the end;
// epoch = at each epoch's end (the last, possibly partial, epoch ends with the run).
bool Validator::Due(const Progress& p) const {
  if (rows_.size() == 0) return false;
  if (train_->eval_strategy == "steps") {
    const int64_t every = train_->eval_steps > 0 ? train_->eval_steps : std::max<int64_t>(1, train_->logging_steps);
    return p.step % every == 0 || p.last();
  }
  if (train_->eval_strategy == "epoch") return p.epoch_end() || p.last();
  return false;
}

std::optional<double> Validator::MaybeEvaluate(model::CausalLM& lm, const Progress& p) const {
  if (!Due(p)) return std::nullopt;
  eval_metrics_.clear();
  if (pair_stage_ != nullptr) {
    return EvalPairLoss(*pair_stage_, lm, rows_, train_->per_device_eval_batch_size, *rt_, &eval_metrics_);
  }
  return EvalLoss(lm, rows_, train_->per_device_eval_batch_size, *rt_);
}

}  // namespace anneal::train
