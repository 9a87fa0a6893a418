#include "trainer/train/kto.h"

#include <torch/torch.h>

#include <algorithm>

#include "trainer/train/finetune.h"
#include "trainer/train/preference.h"

namespace anneal::train {
namespace {

// The longest of rows [begin, begin + n) rounded up to 8 (LLaMA-Factory's collator: pad_to_multiple_of 8), then
// to `multiple`, at most the batch's width (itself a multiple of both).
int64_t HalfWidth(const Batch& b, int64_t begin, int64_t n, int64_t multiple) {
  const int64_t longest = b.attention_mask.slice(0, begin, begin + n).sum(1).max().item<int64_t>();
  const int64_t width = (longest + 7) / 8 * 8;
  return std::min<int64_t>(b.input_ids.size(1), (width + multiple - 1) / multiple * multiple);
}

// Rows [begin, begin + n) of `b` cut to `width` (what Run feeds the model: ids, mask, labels; positions from 0).
Batch HalfOf(const Batch& b, int64_t begin, int64_t n, int64_t width) {
  Batch h;
  h.input_ids = b.input_ids.slice(0, begin, begin + n).slice(1, 0, width).contiguous();
  h.attention_mask = b.attention_mask.slice(0, begin, begin + n).slice(1, 0, width).contiguous();
  h.labels = b.labels.slice(0, begin, begin + n).slice(1, 0, width).contiguous();
  return h;
}

enum Sum {
  kChosenReward,
  kChosenLogps,
  kChosenLogits,
  kChosenCount,
  kRejectedReward,
  kRejectedLogps,
  kRejectedLogits,
  kRejectedCount,
  kKl,
  kKlCount
};

}  // namespace

KtoOptions KtoOptions::From(const jobspec::FinetuningSpec& ft) {
  return KtoOptions{ft.pref_beta, ft.pref_ftx, ft.kto_chosen_weight, ft.kto_rejected_weight};
}

KtoTerms KtoLoss(const KtoOptions& o, const torch::Tensor& chosen, const torch::Tensor& rejected,
                 const torch::Tensor& ref_chosen, const torch::Tensor& ref_rejected, const torch::Tensor& kl) {
  const torch::Tensor chosen_ratios = chosen - ref_chosen, rejected_ratios = rejected - ref_rejected;
  const torch::Tensor chosen_losses = 1 - torch::sigmoid(o.beta * (chosen_ratios - kl));
  const torch::Tensor rejected_losses = 1 - torch::sigmoid(o.beta * (kl - rejected_ratios));
  return {torch::cat({o.chosen_weight * chosen_losses, o.rejected_weight * rejected_losses}),
          o.beta * chosen_ratios.detach(), o.beta * rejected_ratios.detach()};
}

KtoTrainer::KtoTrainer(KtoOptions options, model::CausalLM* policy, model::CausalLM* reference, parallel::Comm* dp,
                       int64_t width_multiple)
    : options_(options),
      policy_(policy),
      reference_(reference),
      dp_(dp),
      width_multiple_(std::max<int64_t>(1, width_multiple)) {
  // TRL's disable_dropout_in_model (LLaMA-Factory applies it): LoRA dropout off.
  for (auto& [name, lin] : LoraModules(*policy_)) lin->disable_lora_dropout();
}

KtoTrainer::Forward KtoTrainer::Run(model::CausalLM& lm, const Batch& b, int64_t begin, int64_t n, int64_t width,
                                    bool adapters_off) {
  std::vector<std::pair<std::string, model::Linear>> lora;
  if (adapters_off) lora = LoraModules(lm);
  for (auto& [name, lin] : lora) lin->set_lora_enabled(false);
  const torch::Tensor ids = b.input_ids.slice(0, begin, begin + n).slice(1, 0, width).contiguous();
  const torch::Tensor mask = b.attention_mask.slice(0, begin, begin + n).slice(1, 0, width).contiguous();
  const torch::Tensor labels = b.labels.slice(0, begin, begin + n).slice(1, 0, width);
  const torch::Tensor logits =
      lm->factory()
          .HeadLogits(lm->Forward({.input_ids = ids, .attention_mask = mask}), lm->head_weight())
          .to(torch::kFloat32);
  for (auto& [name, lin] : lora) lin->set_lora_enabled(true);
  auto [logps, counts] = SequenceLogps(lm->factory(), logits, labels);
  return {logps, counts, logits};
}

torch::Tensor KtoTrainer::MicroBatchLoss(const Batch& b, bool training) {
  const int64_t n = b.input_ids.size(0) / 2;
  const int64_t target_width = HalfWidth(b, 0, n, width_multiple_), kl_width = HalfWidth(b, n, n, width_multiple_);
  const Forward policy = Run(*policy_, b, 0, n, target_width, false);
  torch::Tensor policy_kl, ref_logps, ref_kl;
  {
    torch::NoGradGuard no_grad;
    policy_kl = Run(*policy_, b, n, n, kl_width, false).logps;
    model::CausalLM& ref = reference_ != nullptr ? *reference_ : *policy_;
    ref_logps = Run(ref, b, 0, n, target_width, reference_ == nullptr).logps;
    ref_kl = Run(ref, b, n, n, kl_width, reference_ == nullptr).logps;
  }
  return Loss(b, policy, policy_kl, ref_logps, ref_kl, training);
}

std::vector<Batch> KtoTrainer::PipelineInputs(const std::vector<Batch>& micro) {
  std::vector<Batch> targets;
  for (const Batch& b : micro) {
    const int64_t n = b.input_ids.size(0) / 2;
    targets.push_back(HalfOf(b, 0, n, HalfWidth(b, 0, n, width_multiple_)));
  }
  return targets;
}

void KtoTrainer::BeforePipeline(const std::vector<Batch>& micro, const StageContext& ctx) {
  torch::NoGradGuard no_grad;
  std::vector<Batch> targets = PipelineInputs(micro), kls;
  for (const Batch& b : micro) {
    const int64_t n = b.input_ids.size(0) / 2;
    kls.push_back(HalfOf(b, n, n, HalfWidth(b, n, n, width_multiple_)));
  }
  pipeline_logps_.assign(micro.size(), NoGradLogps());
  StageContext forward = ctx;
  forward.before_last_backward = nullptr;
  auto logps_into = [&](model::CausalLM& lm, const std::vector<Batch>& halves, torch::Tensor NoGradLogps::*field) {
    ForwardMicroBatches(lm, halves, forward, [&](int64_t m, const torch::Tensor& hidden) {
      const torch::Tensor logits = lm->factory().HeadLogits(hidden, lm->head_weight()).to(torch::kFloat32);
      pipeline_logps_[m].*field = SequenceLogps(lm->factory(), logits, halves[m].labels).first;
    });
  };
  logps_into(*policy_, kls, &NoGradLogps::policy_kl);
  model::CausalLM& ref = reference_ != nullptr ? *reference_ : *policy_;
  std::vector<std::pair<std::string, model::Linear>> lora;
  if (reference_ == nullptr) lora = LoraModules(*policy_);  // peft's disable_adapter
  for (auto& [name, lin] : lora) lin->set_lora_enabled(false);
  logps_into(ref, targets, &NoGradLogps::ref_logps);
  logps_into(ref, kls, &NoGradLogps::ref_kl);
  for (auto& [name, lin] : lora) lin->set_lora_enabled(true);
}

torch::Tensor KtoTrainer::LastStageLoss(const Batch& b, const torch::Tensor& hidden, int64_t m, bool training) {
  const int64_t n = b.input_ids.size(0) / 2;
  const Batch target = HalfOf(b, 0, n, HalfWidth(b, 0, n, width_multiple_));
  Forward policy;
  policy.logits = (*policy_)->factory().HeadLogits(hidden, (*policy_)->head_weight()).to(torch::kFloat32);
  std::tie(policy.logps, policy.counts) = SequenceLogps((*policy_)->factory(), policy.logits, target.labels);
  const NoGradLogps& done = pipeline_logps_.at(m);
  return Loss(b, policy, done.policy_kl, done.ref_logps, done.ref_kl, training);
}

torch::Tensor KtoTrainer::Loss(const Batch& b, const Forward& policy, const torch::Tensor& policy_kl,
                               const torch::Tensor& ref_logps, const torch::Tensor& ref_kl, bool training) {
  const int64_t n = b.input_ids.size(0) / 2;
  const torch::Tensor tags = b.kto_tags.to(torch::kBool);
  torch::Tensor kl = (policy_kl - ref_kl).mean().detach();
  if (training && dp_ != nullptr && dp_->size() > 1) {  // TRL: gather_for_metrics(kl).mean()
    dp_->AllReduceSum(kl);
    kl = kl / dp_->size();
  }
  kl = kl.clamp_min(0);
  const torch::Tensor chosen = policy.logps.index({tags}), rejected = policy.logps.index({~tags});
  const KtoTerms t = KtoLoss(options_, chosen, rejected, ref_logps.index({tags}), ref_logps.index({~tags}), kl);
  torch::Tensor loss = t.losses.nanmean();
  const int64_t chosen_count = chosen.size(0), rejected_count = rejected.size(0);
  if (options_.ftx > 1e-6 && chosen_count > 0) {  // LLaMA-Factory's "remember to rescale"
    const torch::Tensor chosen_avg = chosen / policy.counts.index({tags});
    loss = loss + options_.ftx * (-chosen_avg).nanmean() / static_cast<double>(chosen_count) * static_cast<double>(n);
  }
  {
    torch::NoGradGuard no_grad;
    // [n]: each row's sum over its positions and the whole vocabulary (the pieces' sums gathered under tp).
    const torch::Tensor logits_sums = (*policy_)->factory().FullLogits(policy.logits.sum({1, 2}).unsqueeze(1)).sum(1);
    sums_[kChosenReward] += t.chosen_rewards.nansum().item<double>();
    sums_[kChosenLogps] += chosen.detach().nansum().item<double>();
    sums_[kChosenLogits] += logits_sums.index({tags}).nansum().item<double>();
    sums_[kChosenCount] += static_cast<double>(chosen_count);
    sums_[kRejectedReward] += t.rejected_rewards.nansum().item<double>();
    sums_[kRejectedLogps] += rejected.detach().nansum().item<double>();
    sums_[kRejectedLogits] += logits_sums.index({~tags}).nansum().item<double>();
    sums_[kRejectedCount] += static_cast<double>(rejected_count);
    sums_[kKl] += kl.item<double>();
    sums_[kKlCount] += 1;
  }
  return loss;
}

std::vector<std::string> KtoTrainer::MetricNames() const {
  return {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
          "logps/rejected", "logits/chosen",    "logits/rejected", "kl"};
}

std::vector<std::pair<std::string, double>> KtoTrainer::TakeMetrics() {
  torch::Tensor all = torch::tensor(sums_, torch::kFloat64);
  if (dp_ != nullptr && dp_->size() > 1) {
    // The metrics' sums over the ranks (kl: each rank holds the same all-ranks mean; its count makes it a mean).
    all = all.to((*policy_)->parameters().front().device());
    dp_->AllReduceSum(all);
    all = all.cpu();
  }
  std::fill(sums_.begin(), sums_.end(), 0.0);
  const auto s = [&](int k) { return all[k].item<double>(); };
  const auto ratio = [](double sum, double count) { return count > 0 ? sum / count : 0.0; };
  const double chosen = ratio(s(kChosenReward), s(kChosenCount)),
               rejected = ratio(s(kRejectedReward), s(kRejectedCount));
  return {{"rewards/chosen", chosen},
          {"rewards/rejected", rejected},
          {"rewards/margins", s(kChosenCount) > 0 && s(kRejectedCount) > 0 ? chosen - rejected : 0.0},
          {"logps/chosen", ratio(s(kChosenLogps), s(kChosenCount))},
          {"logps/rejected", ratio(s(kRejectedLogps), s(kRejectedCount))},
          {"logits/chosen", ratio(s(kChosenLogits), s(kChosenCount))},
          {"logits/rejected", ratio(s(kRejectedLogits), s(kRejectedCount))},
          {"kl", ratio(s(kKl), s(kKlCount))}};
}

}  // namespace anneal::train
