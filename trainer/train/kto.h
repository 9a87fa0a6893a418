// Stage kto: Kahneman-Tversky optimization over answers tagged desirable or undesirable, as LLaMA-Factory's
// CustomKTOTrainer computes it (train/kto/trainer.py, v0.9.5) on TRL's KTO loss (trl 1.16's KTOTrainer keeps the
// same formula):
//
//   logps(y)  = sum over the answer's label tokens of log p(token)   (SequenceLogps, fp32 log_softmax)
//   kl        = max(0, mean over the micro-batch of (pi(y'|x) - ref(y'|x)))   y': the KL completions, detached;
//               under data parallelism the mean of every rank's mean (TRL's gather_for_metrics(kl).mean())
//   desirable   loss = kto_chosen_weight   * (1 - sigmoid(beta * ((pi(y) - ref(y)) - kl)))
//   undesirable loss = kto_rejected_weight * (1 - sigmoid(beta * (kl - (pi(y) - ref(y)))))
//   loss      = the mean over the micro-batch's examples
//               + pref_ftx * mean(-pi_avg(y) over the desirable ones) / n_desirable * n   (LLaMA-Factory's
//               "rescale", when the micro-batch has a desirable answer)
//
// The KL completions are LLaMA-Factory's FeedbackDatasetProcessor's: example i's prompt with example i-1's answer
// (trainer/data/feedback.h); their forward runs without grad. The reference is the base model: under LoRA the
// policy with its adapters off, for full and freeze a frozen copy. Dropout is off (TRL's disable_dropout).
//
// A micro-batch of n examples is [2n, T]: the n target rows, then their n KL rows (trainer/train/rows.h), with
// kto_tags [n]. Each half runs at its own width (the longest row rounded up to 8, as LLaMA-Factory's collator
// pads the target and the KL batches separately), which only the logits metrics see.
//
// Metrics (LLaMA-Factory's log: sums over the step's micro-batches and data-parallel ranks divided by the
// counts): rewards/chosen, rewards/rejected (beta * (pi - ref)), logps/chosen, logps/rejected, logits/chosen,
// logits/rejected (the sum of every logit of the padded rows over the count, LLaMA-Factory's logits/*_sum /
// count), rewards/margins (chosen - rejected), kl (the mean over the step's micro-batches, as trl 1.16 logs it;
// LLaMA-Factory 0.9.5 logs their sum over micro-batches and ranks). A side with no example in the step logs 0
// (LLaMA-Factory leaves the key out). Evaluation logs the same metrics over the evaluation batches with the
// "eval_" prefix (eval_rewards/chosen, ..., eval_kl: the mean of the batches' KL estimates, each this rank's;
// LLaMA-Factory logs that sum unprefixed as "kl").
//
// Data, tensor (with or without sequence parallelism) and pipeline parallelism are built: under pp each step
// first runs the KL rows (policy) and both halves (reference) through the stages without grad, then the target
// rows with grad; the last stage computes the loss, the KL estimate and the metrics. Under tensor parallelism the log
// probabilities and the logits sums are combined over the vocabulary pieces (LinearFactory::TokenLogProbs /
// FullLogits), so every rank of the group holds the same logps, KL estimate and metrics; the KL mean and the metrics
// are reduced over `dp` only. With sequence parallelism each half's width is also a multiple of tp (the sequence is cut
// into tp pieces).
//
// Thread-safety: one thread at a time (it runs the model; TakeMetrics is a collective over `dp`).
//
// Example:
//   KtoTrainer kto(KtoOptions::From(spec.finetuning), &lm, /*reference=*/nullptr, rt.dp_comm.get());
//   double loss = kto.TrainMicroBatches(micro, /*scale=*/1.0 / (accumulation * dp), rt.stage_context());
//   std::vector<std::pair<std::string, double>> metrics = kto.TakeMetrics();
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "jobspec/jobspec.h"
#include "trainer/model/decoder.h"
#include "trainer/parallel/comm.h"
#include "trainer/train/batch.h"
#include "trainer/train/pair_stage.h"

namespace anneal::train {

struct KtoOptions {
  double beta = 0.1, ftx = 0.0, chosen_weight = 1.0, rejected_weight = 1.0;

  static KtoOptions From(const jobspec::FinetuningSpec& ft);
};

// The per-example losses [n] (desirable ones first, then undesirable, as TRL concatenates them) and the rewards
// of each side, from the policy's and the reference's logps of the desirable [c] and undesirable [r] answers and
// the KL estimate (a scalar, already clamped at 0).
struct KtoTerms {
  torch::Tensor losses, chosen_rewards, rejected_rewards;
};
KtoTerms KtoLoss(const KtoOptions& o, const torch::Tensor& chosen, const torch::Tensor& rejected,
                 const torch::Tensor& ref_chosen, const torch::Tensor& ref_rejected, const torch::Tensor& kl);

class KtoTrainer : public PairStage {
 public:
  // `policy` is trained; `reference` is the frozen base for full / freeze tuning (null under LoRA: the policy
  // with its adapters off). `dp` (null: one replica) averages the KL estimate and sums the metrics. Borrowed.
  // `width_multiple`: each half's width is rounded up to it as well (tp under sequence parallelism, else 1).
  KtoTrainer(KtoOptions options, model::CausalLM* policy, model::CausalLM* reference, parallel::Comm* dp,
             int64_t width_multiple = 1);

  // (TrainMicroBatches and EvalMicroBatches: pair_stage.h. In evaluation the KL estimate is this rank's:
  // evaluation batches need not be equal in number on every rank.)
  // The metrics since the last call (see the file comment), summed over the data-parallel ranks; clears them.
  // Every rank must call it.
  std::vector<std::pair<std::string, double>> TakeMetrics() override;
  std::vector<std::string> MetricNames() const override;
  // Evaluation logs the same metrics over the evaluation batches (eval_rewards/chosen, ..., eval_kl).
  bool LogsEvalMetrics() const override { return true; }

 private:
  // `training`: the KL estimate is averaged over the data-parallel ranks (a collective).
  torch::Tensor MicroBatchLoss(const Batch& b, bool training) override;
  // (logps [rows], label counts [rows], fp32 logits [rows, width, V]) of `lm` on rows [begin, begin + n) cut to
  // `width`; `adapters_off` runs the policy as its base model.
  struct Forward {
    torch::Tensor logps, counts, logits;
  };
  Forward Run(model::CausalLM& lm, const Batch& b, int64_t begin, int64_t n, int64_t width, bool adapters_off);
  // The loss from the policy's forward of the target rows, the no-grad log-probs of the policy on the KL rows and
  // of the reference on both; records the metrics.
  torch::Tensor Loss(const Batch& b, const Forward& policy, const torch::Tensor& policy_kl,
                     const torch::Tensor& ref_logps, const torch::Tensor& ref_kl, bool training);

  // Pipeline parallelism (pair_stage.h): the target rows travel through the stages with grad; before them the KL
  // rows (policy) and both halves (reference) without grad, the last stage keeping their log-probs.
  model::CausalLM* PipelineModel() override { return policy_; }
  std::vector<Batch> PipelineInputs(const std::vector<Batch>& micro) override;
  void BeforePipeline(const std::vector<Batch>& micro, const StageContext& ctx) override;
  torch::Tensor LastStageLoss(const Batch& b, const torch::Tensor& hidden, int64_t m, bool training) override;
  // (policy KL, reference targets, reference KL) log-probs of each micro-batch, on the last stage.
  struct NoGradLogps {
    torch::Tensor policy_kl, ref_logps, ref_kl;
  };
  std::vector<NoGradLogps> pipeline_logps_;

  KtoOptions options_;
  model::CausalLM* policy_;
  model::CausalLM* reference_;
  parallel::Comm* dp_;
  int64_t width_multiple_;
  // rewards/chosen, logps/chosen, logits/chosen, count/chosen, the same for rejected, then kl (and its count).
  std::vector<double> sums_ = std::vector<double>(10, 0.0);
};

}  // namespace anneal::train
