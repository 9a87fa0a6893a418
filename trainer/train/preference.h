// Stage dpo: preference optimization over (chosen, rejected) pairs, as LLaMA-Factory's CustomDPOTrainer computes
// it (train/dpo/trainer.py, v0.9.5, on TRL's DPO losses):
//
//   logps(y)  = sum over the answer's label tokens of log p(token)  (SequenceLogps; fp32 log_softmax)
//               ipo, orpo and simpo use the mean instead of the sum (divided by the label count)
//   sigmoid   = -logsigmoid(beta * d)       d = (pi(c) - pi(r)) - (ref(c) - ref(r))   (DPO)
//   hinge     = relu(1 - beta * d)
//   ipo       = (d - 1 / (2 beta))^2
//   orpo      = -pi(c) + beta * -logsigmoid(log_odds)
//               log_odds = (pi(c) - pi(r)) - (log1p(-e^pi(c)) - log1p(-e^pi(r)))
//   simpo     = -logsigmoid(beta * ((pi(c) - pi(r)) - simpo_gamma / beta))
//   + pref_ftx * -pi_avg(c)   (the chosen answer's mean token log-likelihood; pi(c) itself for ipo/orpo/simpo)
//
// The reference (sigmoid, hinge, ipo) is the base model: under LoRA the same model with its adapters switched
// off (peft's disable_adapter: no second copy), for full and freeze a frozen copy loaded from the base. Rewards
// are beta * (pi - ref) (beta * pi without a reference). Dropout is off in preference training (TRL's
// disable_dropout_in_model, which LLaMA-Factory applies).
//
// Tensor parallelism: the head's logits stay split over the vocabulary; log probabilities and the logits metrics
// are combined over the group (LinearFactory::TokenLogProbs), so every layout computes the single-process values.
//
// Pipeline parallelism (pair_stage.h): a pair's chosen and rejected rows travel through the stages together; each
// step first runs the reference through the stages without grad (the frozen copy, held per stage, or every stage's
// layers with their adapters off), the last stage keeping each micro-batch's reference log-probs; then the policy's
// pass, whose last stage computes the log-probs, the loss and the metrics.
//
// A micro-batch holds n pairs as [2n, T] (chosen rows, then rejected rows: trainer/train/rows.h); its loss is the
// mean over its pairs, scaled by 1 / (gradient_accumulation_steps x data-parallel ranks) so the summed gradients
// equal HF Trainer's (loss / accumulation, DDP mean). Metrics are the means LLaMA-Factory logs: rewards/chosen,
// rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected, logits/chosen,
// logits/rejected (the mean logit over the padded [n, T, V] block, as LLaMA-Factory), and for orpo sft_loss and
// odds_ratio_loss.
//
// Thread-safety: one thread at a time (it runs the model).
//
// Example:
//   PreferenceTrainer pref(PreferenceOptions::From(spec.finetuning), &lm, reference_lm);
//   double loss = pref.TrainMicroBatches(micro, /*scale=*/1.0 / (accumulation * dp), rt.stage_context());
//   std::vector<std::pair<std::string, double>> metrics = pref.TakeMetrics();   // means over the micro-batches
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "jobspec/jobspec.h"
#include "trainer/model/decoder.h"
#include "trainer/train/batch.h"
#include "trainer/train/pair_stage.h"

namespace anneal::train {

struct PreferenceOptions {
  std::string loss = "sigmoid";  // sigmoid, hinge, ipo, orpo, simpo
  double beta = 0.1, ftx = 0.0, simpo_gamma = 0.5;

  static PreferenceOptions From(const jobspec::FinetuningSpec& ft);
  bool uses_reference() const { return loss != "orpo" && loss != "simpo"; }
  bool averages_logps() const { return loss == "ipo" || loss == "orpo" || loss == "simpo"; }
};

// logits [B, T, V] (any dtype; under tensor parallelism this rank's vocabulary piece [B, T, V/tp], which `factory`
// turns into log probabilities across the group), labels [B, T] unshifted (-100 where no loss) -> (sum of the
// label tokens' log probabilities [B] fp32, label token count [B] fp32). Position t predicts label t + 1.
std::pair<torch::Tensor, torch::Tensor> SequenceLogps(const model::LinearFactory& factory, const torch::Tensor& logits,
                                                      const torch::Tensor& labels);

// The per-pair loss [n] and rewards [n] from the policy's (and the reference's) logps [n] of the chosen and
// rejected answers; chosen_avg [n] is the chosen answer's mean token log-likelihood (for pref_ftx).
struct PreferenceTerms {
  torch::Tensor losses, chosen_rewards, rejected_rewards;
};
PreferenceTerms PreferenceLoss(const PreferenceOptions& o, const torch::Tensor& chosen, const torch::Tensor& rejected,
                               const torch::Tensor& ref_chosen, const torch::Tensor& ref_rejected,
                               const torch::Tensor& chosen_avg);

class PreferenceTrainer : public PairStage {
 public:
  // `policy` is trained; `reference` is the frozen base for full / freeze tuning (null under LoRA, whose
  // reference is the policy with its adapters off, and for orpo / simpo). Both are borrowed.
  PreferenceTrainer(PreferenceOptions options, model::CausalLM* policy, model::CausalLM* reference);

  // (TrainMicroBatches and EvalMicroBatches: pair_stage.h. Evaluation collects metrics too: take them before the
  // next training step.)
  // The metrics of the micro-batches since the last call, each the mean over those micro-batches; clears them.
  std::vector<std::pair<std::string, double>> TakeMetrics() override;
  std::vector<std::string> MetricNames() const override;
  // LLaMA-Factory logs the evaluation batches' metric means as eval_rewards/..., eval_logps/..., eval_logits/...
  bool LogsEvalMetrics() const override { return true; }

 private:
  // The reference's (chosen, rejected) log-probs [n] each; undefined for a reference-free loss.
  using RefLogps = std::pair<torch::Tensor, torch::Tensor>;
  // One micro-batch: its loss (pair mean, with grad when training) and its metrics recorded.
  torch::Tensor MicroBatchLoss(const Batch& b, bool training) override;
  model::CausalLM* PipelineModel() override { return policy_; }
  void BeforePipeline(const std::vector<Batch>& micro, const StageContext& ctx) override;
  torch::Tensor LastStageLoss(const Batch& b, const torch::Tensor& hidden, int64_t m, bool training) override;
  // The reference log-probs from its logits [2n, T, V(/tp)] fp32.
  RefLogps ReferenceFromLogits(const Batch& b, const torch::Tensor& logits) const;
  // The policy's loss from its logits [2n, T, V(/tp)] fp32 and the reference's log-probs; records the metrics.
  torch::Tensor LossFromLogits(const Batch& b, const torch::Tensor& logits, const RefLogps& ref);
  // The model the reference log-probs come from: the frozen copy, or the policy (with its adapters set off).
  model::CausalLM& ReferenceModel();
  void SetPolicyAdapters(bool enabled);

  PreferenceOptions options_;
  model::CausalLM* policy_;
  model::CausalLM* reference_;
  std::vector<RefLogps> pipeline_refs_;  // pipeline parallelism: each micro-batch's, on the last stage
  std::vector<std::pair<std::string, double>> sums_;
  int64_t recorded_ = 0;
};

}  // namespace anneal::train
