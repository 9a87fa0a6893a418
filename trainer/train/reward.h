// Stage rm: reward modeling on (chosen, rejected) pairs, as LLaMA-Factory's PairwiseTrainer computes it
// (train/rm/trainer.py, v0.9.5, on TRL's AutoModelForCausalLMWithValueHead):
//
//   values  = v_head(final hidden states)               [B, T, H] -> [B, T] fp32
//             v_head = dropout(summary_dropout_prob) then Linear(H, 1) in fp32 (TRL's ValueHead)
//   scores  = values at each sequence's last non-pad token (attention_mask.sum(-1) - 1)
//   loss    = -logsigmoid(score(chosen) - score(rejected)).mean()      (the eval loss too)
//   eval    = accuracy: the share of pairs with score(chosen) > score(rejected) (LLaMA-Factory's ComputeAccuracy)
//
// The value head is the stage's, not the model's: weight [1, H] and bias [1] in fp32, trained in full next to
// LoRA / full / freeze tuning (as LLaMA-Factory, which wraps the tuned model). It is read from
// value_head.safetensors in adapter_name_or_path (when given) or model_name_or_path, as LLaMA-Factory's loader
// does, else initialised as torch's nn.Linear default (kaiming_uniform(a = sqrt(5)): U(-1/sqrt(H), 1/sqrt(H)) for
// the weight, then the bias) from a CPU generator seeded with `seed` alone, so it is the same on every rank and
// run. summary_dropout_prob comes from the model's config.json (TRL's default 0.1 when absent; 0: none), and
// applies while training only. Under full tuning lm_head gets no gradient (the logits are not computed), so it
// is not among the trained parameters (torch's AdamW skips a parameter without a gradient).
//
// Tensor parallelism: the final hidden states are whole on every rank of the group, so is the value head (its
// gradient is then whole there too, nothing to sum). With sequence parallelism each rank holds [B, T/tp, H]: the
// head scores its own positions, the values are all-gathered along the sequence, and the loss (computed whole
// on every rank) sends each rank's positions their gradient once (the gather's reduce-scatter of tp identical
// gradients is divided by tp); the head's gradients are then partial and summed over the group with the other
// replicated parameters (parallel::SumPartialGradients). Dropout draws from each rank's generator (seeded alike).
//
// Output as LLaMA-Factory's fix_valuehead_checkpoint: value_head.safetensors with v_head.summary.weight and
// v_head.summary.bias next to the adapter or model, and in every checkpoint.
//
// Thread-safety: one thread at a time (it runs the model).
//
// Example:
//   ASSIGN_OR_RETURN(ValueHead head, ValueHead::ForModel(model_dir, adapter_dir, hidden, seed, device));
//   RewardTrainer rm(&lm, &head);
//   double loss = rm.TrainMicroBatches(micro, /*scale=*/1.0 / (accumulation * dp), before_last_backward);
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "trainer/model/decoder.h"
#include "trainer/optim/adamw.h"
#include "trainer/parallel/comm.h"
#include "trainer/train/pair_stage.h"

namespace anneal::train {

inline constexpr char kValueHeadFile[] = "value_head.safetensors";

class ValueHead {
 public:
  // Read from <adapter_dir or model_dir>/value_head.safetensors when it exists (DATA_LOSS when a tensor is missing
  // or has the wrong shape), else the seeded initialisation; dropout from model_dir/config.json.
  static StatusOr<ValueHead> ForModel(const std::string& model_dir, const std::string& adapter_dir, int64_t hidden,
                                      uint64_t seed, const torch::Device& device);
  // nn.Linear(hidden, 1)'s default initialisation from a generator seeded with `seed`.
  static ValueHead Initial(int64_t hidden, uint64_t seed, double dropout, const torch::Device& device);

  // hidden [B, T, H] (any dtype) -> values [B, T] fp32; dropout only when `training`.
  torch::Tensor Values(const torch::Tensor& hidden, bool training) const;
  // v_head.summary.weight (weight decay) and v_head.summary.bias (none), trainable.
  std::vector<optim::TrainableParam> Params() const;
  // The tensors by LLaMA-Factory's names (CPU copies not needed: WriteSafetensors copies).
  std::vector<std::pair<std::string, torch::Tensor>> Named() const;

  const torch::Tensor& weight() const { return weight_; }
  const torch::Tensor& bias() const { return bias_; }
  double dropout() const { return dropout_; }

 private:
  torch::Tensor weight_, bias_;  // [1, H], [1] fp32
  double dropout_ = 0.1;
};

// The model config's summary_dropout_prob (TRL's ValueHead reads it), 0.1 when absent.
StatusOr<double> SummaryDropout(const std::string& model_dir);

// values [2n, T] of n chosen rows then n rejected rows, attention_mask [2n, T] (right padding; undefined: no
// padding) -> (chosen scores [n], rejected scores [n]): each row's value at its last non-pad token.
std::pair<torch::Tensor, torch::Tensor> PairScores(const torch::Tensor& values, const torch::Tensor& attention_mask);

// -logsigmoid(chosen - rejected).mean() in fp32 (a scalar).
torch::Tensor PairwiseRankingLoss(const torch::Tensor& chosen, const torch::Tensor& rejected);

// Writes `tensors`' v_head.* entries to <dir>/value_head.safetensors (FAILED_PRECONDITION when there are none).
Status WriteValueHead(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, const std::string& dir);

// LLaMA-Factory's export of a reward model (export_model with stage rm): value_head.safetensors (else
// value_head.bin) of `adapter_dir` when given, else of `model_dir`, copied into `out_dir`. Returns the copied file's
// path, or "" when there is none (LLaMA-Factory exports without it too).
StatusOr<std::string> CopyValueHead(const std::string& model_dir, const std::string& adapter_dir,
                                    const std::string& out_dir);

class RewardTrainer : public PairStage {
 public:
  // All borrowed; `lm` is the tuned decoder (this rank's pipeline stage of it), `head` its value head (trained on
  // the last stage only under pipeline parallelism: it reads the final hidden states there).
  // `sequence_tp`: the tensor-parallel group when the model runs sequence parallel (its hidden states split along
  // the sequence), else null.
  RewardTrainer(model::CausalLM* lm, const ValueHead* head, parallel::Comm* sequence_tp = nullptr)
      : lm_(lm), head_(head), sequence_tp_(sequence_tp) {}

  // No training metrics: LLaMA-Factory's reward training logs the loss only.
  std::vector<std::pair<std::string, double>> TakeMetrics() override { return {}; }
  // {"accuracy", pairs with chosen > rejected} since the last call.
  std::vector<std::pair<std::string, double>> TakeEvalSums() override;

 private:
  // One micro-batch's pair-mean loss (with grad when training); counts the right-ranked pairs when evaluating.
  torch::Tensor MicroBatchLoss(const Batch& b, bool training) override;
  // Pipeline parallelism (pair_stage.h): the last stage scores the final hidden states it receives.
  model::CausalLM* PipelineModel() override { return lm_; }
  torch::Tensor LastStageLoss(const Batch& b, const torch::Tensor& hidden, int64_t m, bool training) override;
  // The pair-mean loss from the final hidden states [2n, T(/tp under sequence parallelism), C].
  torch::Tensor ScoreLoss(const Batch& b, const torch::Tensor& hidden, bool training);

  model::CausalLM* lm_;
  const ValueHead* head_;
  parallel::Comm* sequence_tp_;
  double eval_correct_ = 0;
};

}  // namespace anneal::train
