// The sparse mixture-of-experts MLP (Qwen3-MoE's Qwen3MoeSparseMoeBlock; built to be reused by DeepSeek-V2/V3).
//
//   router:  logits = x Wg^T [N, E]; p = softmax(logits) in fp32; (w, e) = top-k(p) [N, k];
//            norm_topk_prob: w /= sum(w)
//   experts: y = sum_j w_j * down_e(silu(gate_e(x)) * up_e(x))      (SwiGLU experts, e = e_j)
//   shared:  y += down_s(silu(gate_s(x)) * up_s(x))                   (only when a shared expert is configured)
//
// Dispatch sorts the N*k token slots by expert (a stable argsort), so each expert sees one contiguous slice of
// the gathered tokens; a loop over the experts runs each on its slice and index_add scatters the weighted
// results back. No per-token loop. DenseReference computes the same thing the plain way (every expert on every
// token, masked by the routing weights) for tests.
//
// Parameter names are HF's: "gate.weight" [E, C] (the router), "experts.{e}.{gate,up,down}_proj.weight",
// "shared_expert.{gate,up,down}_proj.weight". Expert projections are Linear layers, so LoRA attaches to them by
// their module names exactly as peft names them ("...mlp.experts.3.gate_proj").
//
// The load-balancing loss needs every sparse layer's router logits: while a RouterLogits collector is attached
// (CollectRouterLogits), forward in training mode appends its [N, E] logits to it. LoadBalancingLoss then computes HF's
// load_balancing_loss_func over them.
//
// Thread-safety: one thread at a time (LibTorch modules).
//
// Example:
//   SparseMoe moe(MoeLayerSpec{.hidden = 64, .num_experts = 8, .top_k = 2, .expert_intermediate = 32},
//                 LinearFactory(), opts);
//   std::vector<torch::Tensor> logits;
//   moe->CollectRouterLogits(&logits);
//   torch::Tensor y = moe->forward(x);                  // [B, T, C]
//   torch::Tensor aux = LoadBalancingLoss(logits, 8, 2, {});
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "trainer/model/linear.h"

namespace anneal::model {

struct MoeLayerSpec {
  int64_t hidden = 0;               // C
  int64_t num_experts = 0;          // E
  int64_t top_k = 1;                // k
  int64_t expert_intermediate = 0;  // F of each routed expert
  bool norm_topk_prob = false;
  int64_t shared_intermediate = 0;  // F of the shared expert; 0 = none
};

// Which experts each token goes to, and with what weight.
struct Routing {
  torch::Tensor logits;   // [N, E] in the input dtype (what the aux loss reads)
  torch::Tensor weights;  // [N, k] in the input dtype
  torch::Tensor experts;  // [N, k] int64
};

// One SwiGLU expert: down(silu(gate(x)) * up(x)).
class ExpertMlpImpl : public torch::nn::Module {
 public:
  ExpertMlpImpl(int64_t hidden, int64_t intermediate, const LinearFactory& factory,
                const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [.., C] -> [.., C]
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(ExpertMlp);

class SparseMoeImpl : public torch::nn::Module {
 public:
  SparseMoeImpl(const MoeLayerSpec& spec, const LinearFactory& factory, const torch::TensorOptions& options);

  // x [B, T, C] -> [B, T, C]; in training mode appends the router logits to the collector when one is attached.
  torch::Tensor forward(const torch::Tensor& x);
  // x [N, C] -> the routing of each token.
  Routing Route(const torch::Tensor& x);
  // x [N, C] -> [N, C]: the routed experts by sorted dispatch (no shared expert).
  torch::Tensor Dispatch(const torch::Tensor& x, const Routing& routing);
  // x [N, C] -> [N, C]: the same as Dispatch, computed densely (every expert on every token). For tests.
  torch::Tensor DenseReference(const torch::Tensor& x, const Routing& routing);

  // Attach (or with nullptr detach) a vector that forward appends this layer's router logits to.
  void CollectRouterLogits(std::vector<torch::Tensor>* sink) { sink_ = sink; }
  std::vector<torch::Tensor>* router_logits_sink() const { return sink_; }
  const MoeLayerSpec& spec() const { return spec_; }

  Linear gate{nullptr};
  torch::nn::ModuleList experts{nullptr};
  ExpertMlp shared_expert{nullptr};

 private:
  MoeLayerSpec spec_;
  std::vector<torch::Tensor>* sink_ = nullptr;
};
TORCH_MODULE(SparseMoe);

// HF's load_balancing_loss_func (Switch Transformer eq. 4-6, as Qwen3-MoE computes it): over all layers'
// router logits [N, E], f_e = (top-k assignments to e) / tokens, P_e = mean softmax probability of e;
// loss = E * sum_e f_e * P_e. attention_mask [B, T] (1 = token; N = B * T), when defined, leaves padding out.
// Returns an fp32 scalar; 0 when there are no logits.
torch::Tensor LoadBalancingLoss(const std::vector<torch::Tensor>& router_logits, int64_t num_experts, int64_t top_k,
                                const torch::Tensor& attention_mask);

}  // namespace anneal::model
