// PairStage: what the trainer asks of a stage that trains on (chosen, rejected) pairs (stage dpo:
// preference.h, stage rm: reward.h). A micro-batch holds n pairs as [2n, T], the n chosen rows then the n
// rejected ones (trainer/train/rows.h); its loss is the mean over its pairs.
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

namespace anneal::train {

class PairStage {
 public:
  virtual ~PairStage() = default;

  // Forward and backward of every micro-batch (pairs, on the device); each one's loss is its pair mean times
  // `scale`. Returns the sum of those losses. Gradients accumulate in the parameters' .grad(); `before_last` runs
  // before the last backward (the data-parallel reducer's arming).
  virtual double TrainMicroBatches(const std::vector<Batch>& micro, double scale,
                                   const std::function<void()>& before_last) = 0;
  // Forward only, no grad, in evaluation mode: (the loss summed over every pair, the pair count).
  virtual std::pair<double, int64_t> EvalMicroBatches(const std::vector<Batch>& micro) = 0;
  // The training metrics of the micro-batches since the last call, each their mean; clears them.
  virtual std::vector<std::pair<std::string, double>> TakeMetrics() = 0;
  // The evaluation metrics' sums over the pairs EvalMicroBatches saw since the last call (divided by the pair
  // count by the caller, e.g. {"accuracy", pairs ranked right}); clears them. None by default.
  virtual std::vector<std::pair<std::string, double>> TakeEvalSums() { return {}; }
};

}  // namespace anneal::train
