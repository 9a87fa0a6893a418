#include "trainer/train/pair_stage.h"

#include <torch/torch.h>

namespace anneal::train {
namespace {

bool MultiStage(const StageContext& ctx) {
  return ctx.pp != nullptr && ctx.pp->size() > 1;
}

}  // namespace

double PairStage::TrainMicroBatches(const std::vector<Batch>& micro, double scale, const StageContext& ctx) {
  if (MultiStage(ctx)) {
    model::CausalLM* lm = PipelineModel();
    TORCH_CHECK(lm != nullptr, "this training stage is not built for pipeline parallelism");
    BeforePipeline(micro, ctx);
    StageContext pair_ctx = ctx;
    pair_ctx.last_stage_loss = [&](const torch::Tensor& hidden, int64_t m) {
      return LastStageLoss(micro[m], hidden, m, /*training=*/true) * scale;
    };
    return train::TrainMicroBatches(*lm, PipelineInputs(micro), /*denom=*/1.0, pair_ctx);
  }
  double total = 0;
  for (size_t m = 0; m < micro.size(); ++m) {
    torch::Tensor loss = MicroBatchLoss(micro[m], /*training=*/true) * scale;
    total += loss.item<double>();
    if (m + 1 == micro.size() && ctx.before_last_backward) ctx.before_last_backward();
    loss.backward();
  }
  return total;
}

std::pair<double, int64_t> PairStage::EvalMicroBatches(const std::vector<Batch>& micro, const StageContext& ctx) {
  torch::NoGradGuard no_grad;
  double total = 0;
  int64_t examples = 0;
  if (MultiStage(ctx)) {
    model::CausalLM* lm = PipelineModel();
    TORCH_CHECK(lm != nullptr, "this training stage is not built for pipeline parallelism");
    BeforePipeline(micro, ctx);
    ForwardMicroBatches(*lm, PipelineInputs(micro), ctx, [&](int64_t m, const torch::Tensor& hidden) {
      const int64_t n = micro[m].input_ids.size(0) / 2;
      total += LastStageLoss(micro[m], hidden, m, /*training=*/false).item<double>() * static_cast<double>(n);
      examples += n;
    });
    return {total, examples};
  }
  for (const Batch& b : micro) {
    const int64_t n = b.input_ids.size(0) / 2;
    total += MicroBatchLoss(b, /*training=*/false).item<double>() * static_cast<double>(n);
    examples += n;
  }
  return {total, examples};
}

at::Tensor PairStage::LastStageLoss(const Batch& /*b*/, const at::Tensor& /*hidden*/, int64_t /*m*/,
                                    bool /*training*/) {
  TORCH_CHECK(false, "this training stage is not built for pipeline parallelism");
}

}  // namespace anneal::train
