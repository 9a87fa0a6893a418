// PairStage: what the trainer asks of a stage that trains on two rows per example (stage dpo: preference.h,
// stage rm: reward.h, stage kto: kto.h). A micro-batch holds n examples as [2n, T]: for dpo and rm the n chosen
// rows then the n rejected ones, for kto the n target rows then their n KL rows (trainer/train/rows.h); its loss
// is the mean over its examples. The training and evaluation loops are the same for every stage (here); a stage
// supplies one micro-batch's loss and its metrics.
//
// Pipeline parallelism (a stage that gives PipelineModel()): the pair's rows travel through the pipeline stages
// together as one micro-batch (pipeline.h, either schedule); every stage first runs BeforePipeline (stage dpo: the
// reference log-probs, a no-grad pass through the stages), and the last stage computes each micro-batch's loss from
// its final hidden states (LastStageLoss) and holds the metrics; the other stages report zeros under MetricNames().
//
// Thread-safety: one thread at a time (implementations run the model).
//
// Example:
//   std::unique_ptr<PairStage> stage = std::make_unique<RewardTrainer>(...);
//   double loss = stage->TrainMicroBatches(micro, /*scale=*/1.0 / (accumulation * dp), before_last_backward);
//   std::vector<std::pair<std::string, double>> metrics = stage->TakeMetrics();
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "trainer/train/batch.h"
#include "trainer/train/pipeline.h"

namespace anneal::train {

class PairStage {
 public:
  virtual ~PairStage() = default;

  // Forward and backward of every micro-batch (on the device); each one's loss is its example mean times
  // `scale`. Returns the sum of those losses (on the last pipeline stage; 0 on the others). Gradients accumulate
  // in the parameters' .grad(); ctx.before_last_backward runs before the last backward (the data-parallel
  // reducer's arming); ctx.pp with more than one stage runs the micro-batches through the pipeline.
  double TrainMicroBatches(const std::vector<Batch>& micro, double scale, const StageContext& ctx);
  // Forward only, no grad (the caller puts the model in evaluation mode): (the loss summed over every example,
  // the example count); (0, 0) on a pipeline stage other than the last.
  std::pair<double, int64_t> EvalMicroBatches(const std::vector<Batch>& micro, const StageContext& ctx);
  // Whether this stage runs under pipeline parallelism (it gives PipelineModel()).
  bool Pipelined() { return PipelineModel() != nullptr; }
  // The names TakeMetrics gives, in order, on a stage that computed none (a pipeline stage before the last, which
  // reports zeros under them so every rank joins the same collectives). Empty by default.
  virtual std::vector<std::string> MetricNames() const { return {}; }
  // The training metrics of the micro-batches since the last call; clears them.
  virtual std::vector<std::pair<std::string, double>> TakeMetrics() = 0;
  // Whether TakeMetrics after EvalMicroBatches gives evaluation metrics to log (as "eval_" + name; stage kto,
  // as LLaMA-Factory logs eval_rewards/... for it). Every rank answers the same. False by default.
  virtual bool LogsEvalMetrics() const { return false; }
  // The evaluation metrics' sums over the examples EvalMicroBatches saw since the last call (divided by the
  // example count by the caller, e.g. {"accuracy", pairs ranked right}); clears them. None by default.
  virtual std::vector<std::pair<std::string, double>> TakeEvalSums() { return {}; }

 protected:
  // One micro-batch [2n, T]: the mean of its n examples' losses (with grad when `training`), its metrics recorded.
  virtual at::Tensor MicroBatchLoss(const Batch& b, bool training) = 0;
  // Pipeline parallelism: the trained model (this rank's stage of it), or null when not built.
  virtual model::CausalLM* PipelineModel() { return nullptr; }
  // Pipeline parallelism: what travels through the stages for micro-batch m (stage kto: its target half); the
  // micro-batches themselves by default.
  virtual std::vector<Batch> PipelineInputs(const std::vector<Batch>& micro) { return micro; }
  // Pipeline parallelism, on every stage before the micro-batches' pass (e.g. a reference pass).
  virtual void BeforePipeline(const std::vector<Batch>& /*micro*/, const StageContext& /*ctx*/) {}
  // Pipeline parallelism, on the last stage: micro-batch m's example-mean loss from the final-normed hidden states
  // [B, T, C] of PipelineInputs' m-th batch (with grad when `training`), its metrics recorded.
  virtual at::Tensor LastStageLoss(const Batch& b, const at::Tensor& hidden, int64_t m, bool training);
};

}  // namespace anneal::train
