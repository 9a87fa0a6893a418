#include "trainer/train/preference.h"

#include <torch/torch.h>

#include "trainer/train/finetune.h"

namespace anneal::train {
namespace {

namespace F = torch::nn::functional;

model::ForwardInputs InputsOf(const Batch& b) {
  return {.input_ids = b.input_ids, .attention_mask = b.attention_mask, .position_ids = b.position_ids};
}

// This rank's logits [2n, T, V or V/tp] in fp32 (LLaMA-Factory: model(...).logits.to(torch.float32)) from the final
// hidden states [2n, T, C].
torch::Tensor LogitsOf(model::CausalLM& lm, const torch::Tensor& hidden) {
  return lm->factory().HeadLogits(hidden, lm->head_weight()).to(torch::kFloat32);
}
torch::Tensor LocalLogitsOf(model::CausalLM& lm, const Batch& b) {
  return LogitsOf(lm, lm->Forward(InputsOf(b)));
}

// The mean logit of rows [begin, end) over the whole vocabulary (LLaMA-Factory's logits/chosen, padding
// included): this rank's sums [rows, 1] gathered over the vocabulary pieces.
double LogitsMean(const model::LinearFactory& factory, const torch::Tensor& local, int64_t begin, int64_t end,
                  int64_t vocab) {
  torch::NoGradGuard no_grad;
  const torch::Tensor rows = local.slice(0, begin, end);
  const torch::Tensor sums = factory.FullLogits(rows.sum({1, 2}).unsqueeze(1));  // [rows, tp]
  return sums.sum().item<double>() / static_cast<double>((end - begin) * rows.size(1) * vocab);
}

}  // namespace

PreferenceOptions PreferenceOptions::From(const jobspec::FinetuningSpec& ft) {
  return PreferenceOptions{ft.pref_loss, ft.pref_beta, ft.pref_ftx, ft.simpo_gamma};
}

std::pair<torch::Tensor, torch::Tensor> SequenceLogps(const model::LinearFactory& factory, const torch::Tensor& logits,
                                                      const torch::Tensor& labels) {
  // LLaMA-Factory's get_batch_logps: labels[:, 1:] against logits[:, :-1].
  const int64_t b = labels.size(0), t = labels.size(1);
  const torch::Tensor next = labels.slice(1, 1, t);
  const torch::Tensor flat = logits.slice(1, 0, t - 1).to(torch::kFloat32).reshape({b * (t - 1), logits.size(2)});
  const torch::Tensor picked = factory.TokenLogProbs(flat, next.reshape({-1})).view({b, t - 1});
  return {picked.sum(-1), next.ne(-100).sum(-1).to(torch::kFloat32)};
}

PreferenceTerms PreferenceLoss(const PreferenceOptions& o, const torch::Tensor& chosen, const torch::Tensor& rejected,
                               const torch::Tensor& ref_chosen, const torch::Tensor& ref_rejected,
                               const torch::Tensor& chosen_avg) {
  PreferenceTerms t;
  if (o.uses_reference()) {
    const torch::Tensor d = (chosen - rejected) - (ref_chosen - ref_rejected);
    if (o.loss == "sigmoid") {
      t.losses = -F::logsigmoid(o.beta * d);
    } else if (o.loss == "hinge") {
      t.losses = torch::relu(1 - o.beta * d);
    } else {  // ipo (logps are per-token means)
      t.losses = (d - 1 / (2 * o.beta)).pow(2);
    }
    t.chosen_rewards = o.beta * (chosen - ref_chosen).detach();
    t.rejected_rewards = o.beta * (rejected - ref_rejected).detach();
  } else {
    if (o.loss == "orpo") {
      const torch::Tensor log_odds =
          (chosen - rejected) - (torch::log1p(-torch::exp(chosen)) - torch::log1p(-torch::exp(rejected)));
      t.losses = -chosen + o.beta * -F::logsigmoid(log_odds);
    } else {  // simpo
      t.losses = -F::logsigmoid(o.beta * ((chosen - rejected) - o.simpo_gamma / o.beta));
    }
    t.chosen_rewards = o.beta * chosen.detach();
    t.rejected_rewards = o.beta * rejected.detach();
  }
  if (o.ftx > 1e-6) t.losses = t.losses + o.ftx * -chosen_avg;
  return t;
}

PreferenceTrainer::PreferenceTrainer(PreferenceOptions options, model::CausalLM* policy, model::CausalLM* reference)
    : options_(std::move(options)), policy_(policy), reference_(reference) {
  // TRL's disable_dropout_in_model: LoRA dropout off (the adapter_config keeps the configured value).
  for (auto& [name, lin] : LoraModules(*policy_)) lin->disable_lora_dropout();
}

model::CausalLM& PreferenceTrainer::ReferenceModel() {
  return reference_ != nullptr ? *reference_ : *policy_;
}

// peft's disable_adapter: without a frozen copy, the base model is the policy without its adapters.
void PreferenceTrainer::SetPolicyAdapters(bool enabled) {
  if (reference_ != nullptr) return;
  for (auto& [name, lin] : LoraModules(*policy_)) lin->set_lora_enabled(enabled);
}

PreferenceTrainer::RefLogps PreferenceTrainer::ReferenceFromLogits(const Batch& b, const torch::Tensor& logits) const {
  auto [sum, count] = SequenceLogps((reference_ != nullptr ? *reference_ : *policy_)->factory(), logits, b.labels);
  if (options_.averages_logps()) sum = sum / count;
  const int64_t n = sum.size(0) / 2;
  return {sum.slice(0, 0, n), sum.slice(0, n, 2 * n)};
}

void PreferenceTrainer::BeforePipeline(const std::vector<Batch>& micro, const StageContext& ctx) {
  pipeline_refs_.assign(micro.size(), RefLogps());
  if (!options_.uses_reference()) return;
  torch::NoGradGuard no_grad;
  model::CausalLM& lm = ReferenceModel();
  SetPolicyAdapters(false);
  StageContext forward = ctx;
  forward.before_last_backward = nullptr;
  ForwardMicroBatches(lm, micro, forward, [&](int64_t m, const torch::Tensor& hidden) {
    pipeline_refs_[m] = ReferenceFromLogits(micro[m], LogitsOf(lm, hidden));
  });
  SetPolicyAdapters(true);
}

torch::Tensor PreferenceTrainer::LastStageLoss(const Batch& b, const torch::Tensor& hidden, int64_t m,
                                               bool /*training*/) {
  return LossFromLogits(b, LogitsOf(*policy_, hidden), pipeline_refs_.at(m));
}

torch::Tensor PreferenceTrainer::MicroBatchLoss(const Batch& b, bool /*training*/) {
  RefLogps ref;
  if (options_.uses_reference()) {
    torch::NoGradGuard no_grad;
    SetPolicyAdapters(false);
    const torch::Tensor ref_logits = LocalLogitsOf(ReferenceModel(), b);
    SetPolicyAdapters(true);
    ref = ReferenceFromLogits(b, ref_logits);
  }
  return LossFromLogits(b, LocalLogitsOf(*policy_, b), ref);
}

torch::Tensor PreferenceTrainer::LossFromLogits(const Batch& b, const torch::Tensor& logits, const RefLogps& ref) {
  const auto& [ref_chosen, ref_rejected] = ref;
  const model::LinearFactory& factory = (*policy_)->factory();
  auto [logps, count] = SequenceLogps(factory, logits, b.labels);
  if (options_.averages_logps()) logps = logps / count;
  const int64_t n = logps.size(0) / 2;
  const torch::Tensor chosen = logps.slice(0, 0, n), rejected = logps.slice(0, n, 2 * n);
  const torch::Tensor chosen_avg = options_.averages_logps() ? chosen : chosen / count.slice(0, 0, n);
  const PreferenceTerms t = PreferenceLoss(options_, chosen, rejected, ref_chosen, ref_rejected, chosen_avg);
  const int64_t vocab = (*policy_)->config().vocab_size;

  std::vector<std::pair<std::string, double>> m = {
      {"rewards/chosen", t.chosen_rewards.mean().item<double>()},
      {"rewards/rejected", t.rejected_rewards.mean().item<double>()},
      {"rewards/accuracies", t.chosen_rewards.gt(t.rejected_rewards).to(torch::kFloat32).mean().item<double>()},
      {"rewards/margins", (t.chosen_rewards - t.rejected_rewards).mean().item<double>()},
      {"logps/chosen", chosen.detach().mean().item<double>()},
      {"logps/rejected", rejected.detach().mean().item<double>()},
      {"logits/chosen", LogitsMean(factory, logits, 0, n, vocab)},
      {"logits/rejected", LogitsMean(factory, logits, n, 2 * n, vocab)}};
  if (options_.loss == "orpo") {
    const torch::Tensor sft = -chosen_avg.detach();
    m.emplace_back("sft_loss", sft.mean().item<double>());
    m.emplace_back("odds_ratio_loss", ((t.losses.detach() - sft) / options_.beta).mean().item<double>());
  }
  if (sums_.empty()) {
    sums_ = m;
  } else {
    for (size_t k = 0; k < m.size(); ++k) sums_[k].second += m[k].second;
  }
  ++recorded_;
  return t.losses.mean();
}

std::vector<std::string> PreferenceTrainer::MetricNames() const {
  std::vector<std::string> names = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                                    "logps/chosen",   "logps/rejected",   "logits/chosen",      "logits/rejected"};
  if (options_.loss == "orpo") names.insert(names.end(), {"sft_loss", "odds_ratio_loss"});
  return names;
}

std::vector<std::pair<std::string, double>> PreferenceTrainer::TakeMetrics() {
  std::vector<std::pair<std::string, double>> out = std::move(sums_);
  for (auto& [name, value] : out) value /= static_cast<double>(std::max<int64_t>(1, recorded_));
  sums_.clear();
  recorded_ = 0;
  return out;
}

}  // namespace anneal::train
