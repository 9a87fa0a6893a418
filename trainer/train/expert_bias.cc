#include "trainer/train/expert_bias.h"

#include <torch/torch.h>

namespace anneal::train {

StatusOr<ExpertBias> ExpertBias::Start(model::CausalLM& lm, double rate, parallel::Comm* dp) {
  const model::ModelConfig& c = lm->config();
  if (!lm->HasSparseLayers() || !c.moe.sigmoid_scoring) {
    return InvalidArgumentError(
        "moe_router_enable_expert_bias: " + c.model_type +
        (lm->HasSparseLayers() ? " routes by softmax scores, without an e_score_correction_bias"
                               : " has no mixture-of-experts layers") +
        "; auxiliary-loss-free balancing needs sigmoid routing with the bias (deepseek_v3): remove the key");
  }
  ExpertBias balance;
  balance.rate_ = rate;
  balance.dp_ = dp;
  for (const auto& layer : lm->model->layers->children()) {
    auto* decoder_layer = layer->as<model::DecoderLayerImpl>();
    if (decoder_layer == nullptr || !decoder_layer->moe) continue;
    decoder_layer->moe->CountLoad(true);
    balance.layers_.push_back(decoder_layer->moe.get());
  }
  return balance;
}

void ExpertBias::Update() {
  if (layers_.empty()) return;  // a pipeline stage without sparse layers
  std::vector<torch::Tensor> loads;
  for (model::SparseMoeImpl* m : layers_) loads.push_back(m->TakeLoad());
  torch::Tensor all = torch::stack(loads);  // [layers, E]
  if (dp_ != nullptr) dp_->AllReduceSum(all);
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->UpdateExpertBias(all[static_cast<int64_t>(i)], rate_);
}

std::vector<std::pair<std::string, at::Tensor>> ExpertBiasBuffers(model::CausalLM& lm) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : lm->named_buffers()) {
    const std::string& name = item.key();
    static const std::string kSuffix = ".mlp.gate.e_score_correction_bias";
    if (name.size() >= kSuffix.size() && name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
      out.emplace_back(name, item.value());
    }
  }
  return out;
}

}  // namespace anneal::train
