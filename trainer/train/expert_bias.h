// Auxiliary-loss-free load balancing (DeepSeek-V3 section 2.1.2; Megatron-core's moe_router_enable_expert_bias /
// moe_router_bias_update_rate): every sparse layer's router has a bias e_score_correction_bias [E] that shifts which
// experts are chosen (not their weights). After each optimizer step, with load_e the token slots routed to expert e
// over the whole global batch (every micro-batch of the step, summed over the data-parallel ranks, padding left
// out), bias_e += rate * sign(mean_e(load) - load_e): overloaded experts are chosen less, idle ones more.
//
// Counting happens in the model (SparseMoeImpl::ArmLoadCount via CausalLM::RunLayers): training forwards only, once
// per micro-batch, not evaluation or activation-checkpoint recomputation. Every rank applies the same update (its
// stage's layers; tensor-parallel ranks route the same tokens and count the same loads), so replicas stay equal.
// The biases are buffers of the base model: checkpoints carry them (ExpertBiasBuffers, state_io.h) and the full
// export writes them under their HF names (mlp.gate.e_score_correction_bias).
//
// Thread-safety: one thread at a time. Update is a collective over the data-parallel group.
//
// Example:
//   ASSIGN_OR_RETURN(ExpertBias balance, ExpertBias::Start(lm, 1e-3, rt.dp_comm.get()));
//   ... forward/backward of every micro-batch; optimizer step ...
//   balance.Update();
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "trainer/model/decoder.h"
#include "trainer/parallel/comm.h"

namespace anneal::train {

class ExpertBias {
 public:
  // Turns load counting on in every sparse layer this rank holds. INVALID_ARGUMENT naming the model when its routers
  // have no e_score_correction_bias (only sigmoid routers, deepseek_v3's, do). `dp` may be null (one replica).
  static StatusOr<ExpertBias> Start(model::CausalLM& lm, double rate, parallel::Comm* dp);
  // After an optimizer step: sums each layer's load over data parallel ([layers, E] in one all-reduce) and moves
  // the biases; the loads start again from zero.
  void Update();
  int64_t layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  std::vector<model::SparseMoeImpl*> layers_;
  double rate_ = 0;
  parallel::Comm* dp_ = nullptr;
};

// The e_score_correction_bias buffers of the sparse layers this rank holds, by HF name
// ("model.layers.3.mlp.gate.e_score_correction_bias" -> [E] fp32, the live tensors).
std::vector<std::pair<std::string, at::Tensor>> ExpertBiasBuffers(model::CausalLM& lm);

}  // namespace anneal::train
