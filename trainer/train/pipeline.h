// Pipeline execution of one optimizer step's micro-batches on this stage (pipeline parallelism), or the plain
// forward/backward loop when there is one stage.
//
// Stage s holds decoder layers [begin, end); the first stage embeds, the last applies the final norm, the head
// and the loss. Activations [B, T, C] go forward and their gradients backward by send/recv over the pipeline
// group; every stage builds the same micro-batches from the data (masks and positions are needed everywhere),
// so shapes never travel.
//
//   gpipe : all forwards, then all backwards (the simple reference).
//   1f1b  : (pp - s - 1) warm-up forwards, then one-forward-one-backward, then the remaining backwards; at most
//           pp - s micro-batches' activations are alive. Neighbours exchange through paired send+recv so the
//           schedule cannot deadlock (Megatron-LM's ordering).
// Both compute exactly the same gradients.
//
// Thread-safety: one thread at a time.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "trainer/model/decoder.h"
#include "trainer/parallel/comm.h"
#include "trainer/train/batch.h"

namespace anneal::train {

enum class PipelineSchedule { kGPipe, kOneFOneB };

struct StageContext {
  parallel::Comm* pp = nullptr;  // null or size 1: a single stage
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;  // the activations' dtype (the model's)
  PipelineSchedule schedule = PipelineSchedule::kOneFOneB;
  // Runs just before this stage's last backward of the step (to arm the overlapped gradient all-reduce).
  std::function<void()> before_last_backward = nullptr;
  // Sequence parallelism: the activations between stages hold 1/sequence_shards of the sequence.
  int64_t sequence_shards = 1;
  // Preference stages (pair_stage.h): replaces the language-model loss on the last stage. Micro-batch m's
  // final-normed hidden states [B, T, C] -> its loss (a scalar, with graph in training; `denom` is not applied
  // and no router auxiliary loss is added).
  std::function<torch::Tensor(const torch::Tensor& hidden, int64_t m)> last_stage_loss = nullptr;
};

// Forward and backward of every micro-batch (already on the device); each micro-batch's loss is its summed
// token losses / `denom`. Returns the sum of those losses on the last stage, 0 elsewhere. Gradients accumulate
// in the parameters' .grad().
double TrainMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro, double denom,
                         const StageContext& ctx);

// Forward only (no grad) of every micro-batch through the stages, in order; on the last stage `on_last(m, hidden)`
// receives micro-batch m's final-normed hidden states [B, T, C]. (The reference pass of stage dpo.)
void ForwardMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro, const StageContext& ctx,
                         const std::function<void(int64_t m, const torch::Tensor& hidden)>& on_last);

// Forward only (no grad): (sum of token losses, label tokens) on the last stage, (0, 0) elsewhere.
std::pair<double, int64_t> EvalMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro,
                                            const StageContext& ctx);

}  // namespace anneal::train
