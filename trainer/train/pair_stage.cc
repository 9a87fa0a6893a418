#include "trainer/train/pair_stage.h"

#include <torch/torch.h>

namespace anneal::train {

double PairStage::TrainMicroBatches(const std::vector<Batch>& micro, double scale,
                                    const std::function<void()>& before_last) {
  double total = 0;
  for (size_t m = 0; m < micro.size(); ++m) {
    torch::Tensor loss = MicroBatchLoss(micro[m], /*training=*/true) * scale;
    total += loss.item<double>();
    if (m + 1 == micro.size() && before_last) before_last();
    loss.backward();
  }
  return total;
}

std::pair<double, int64_t> PairStage::EvalMicroBatches(const std::vector<Batch>& micro) {
  torch::NoGradGuard no_grad;
  double total = 0;
  int64_t examples = 0;
  for (const Batch& b : micro) {
    const int64_t n = b.input_ids.size(0) / 2;
    total += MicroBatchLoss(b, /*training=*/false).item<double>() * static_cast<double>(n);
    examples += n;
  }
  return {total, examples};
}

}  // namespace anneal::train
