// The sparse mixture-of-experts MLP (Qwen3-MoE's Qwen3MoeSparseMoeBlock, DeepSeek-V2/V3's DeepseekV2Moe /
// DeepseekV3MoE).
//
//   router:  logits = x Wg^T [N, E]; p = softmax(logits) in fp32; (w, e) = top-k(p) [N, k];
//            norm_topk_prob: w /= sum(w)
//   experts: y = sum_j w_j * down_e(silu(gate_e(x)) * up_e(x))      (SwiGLU experts, e = e_j)
//   shared:  y += down_s(silu(gate_s(x)) * up_s(x))                   (only when a shared expert is configured)
//
// DeepSeek routing (RouterKind::kDeepseekSoftmax / kDeepseekSigmoid), logits computed in fp32 as HF does:
//   V2: s = softmax(logits); group-limited: keep the topk_group groups (of E / n_group experts) with the highest
//       max score, zero the rest; (w, e) = top-k(s); w *= routed_scaling_factor (norm_topk_prob is not applied).
//   V3: s = sigmoid(logits); c = s + e_score_correction_bias; keep the topk_group groups with the highest sum of
//       their two best c, the rest -inf; e = top-k(c); w = s[e]; norm_topk_prob: w /= sum(w) + 1e-20;
//       w *= routed_scaling_factor. The bias is a buffer "gate.e_score_correction_bias" [E] (not trained).
//
// Dispatch sorts the N*k token slots by expert (a stable argsort), so each expert sees one contiguous slice of
// the gathered tokens; a loop over the experts runs each on its slice and index_add scatters the weighted
// results back. No per-token loop. DenseReference computes the same thing the plain way (every expert on every
// token, masked by the routing weights) for tests.
//
// Parameter names are HF's: "gate.weight" [E, C] (the router), "experts.{e}.{gate,up,down}_proj.weight",
// "shared_expert.{gate,up,down}_proj.weight" (Qwen) or "shared_experts.{gate,up,down}_proj.{weight,bias}"
// (DeepSeek). Expert projections are Linear layers, so LoRA attaches to them by
// their module names exactly as peft names them ("...mlp.experts.3.gate_proj"). Under tensor parallelism (a
// LinearFactory that splits) every expert is split like a dense MLP: gate/up by columns, down by rows; the router
// is replicated, so the tp ranks route identically and each exchanges its pieces' slots with its own ep peers.
//
// The load-balancing loss needs every sparse layer's router logits: while a RouterLogits collector is attached
// (CollectRouterLogits), forward in training mode appends its [N, E] logits to it. LoadBalancingLoss then computes HF's
// load_balancing_loss_func over them.
//
// Auxiliary-loss-free balancing (DeepSeek-V3; Megatron-core's moe_router_enable_expert_bias): while load counting is
// on (CountLoad), a forward armed by ArmLoadCount adds to this layer's load [E] the token slots each expert was
// routed (padding tokens weigh 0); CausalLM::RunLayers arms only training forwards with gradients enabled, once per
// micro-batch (not evaluation, not activation-checkpoint recomputation). After the optimizer step the trainer sums
// the loads over data parallel and calls UpdateExpertBias: bias_e += rate * sign(mean(load) - load_e).
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
#include <optional>
#include <string>
#include <vector>

#include "trainer/model/linear.h"

namespace anneal::parallel {
class Comm;
}

namespace anneal::model {

// Expert parallelism (Megatron's expert_model_parallel_size): the `size` ranks of one expert-parallel group each
// hold num_experts / size routed experts, rank r the contiguous ids [r * E / size, (r + 1) * E / size). Token
// slots travel to their expert's rank and back by all-to-all over `comm` (SparseMoeImpl::Dispatch).
// size 1 (the default): every expert is local and nothing is exchanged.
struct ExpertParallel {
  int64_t size = 1;
  int64_t rank = 0;
  parallel::Comm* comm = nullptr;  // the expert-parallel group (size ranks); null when size == 1
  int64_t First(int64_t num_experts) const { return rank * (num_experts / size); }
  int64_t Count(int64_t num_experts) const { return num_experts / size; }
  bool Holds(int64_t expert, int64_t num_experts) const {
    return expert >= First(num_experts) && expert < First(num_experts) + Count(num_experts);
  }
};

// The routed expert id in a parameter name ("model.layers.3.mlp.experts.5.up_proj.weight" -> 5); nullopt when
// the name is not a routed expert's.
std::optional<int64_t> RoutedExpertOf(const std::string& name);

enum class RouterKind { kSoftmax, kDeepseekSoftmax, kDeepseekSigmoid };

// Megatron-core's token dropping (moe_expert_capacity_factor, moe_token_drop_policy): each expert takes at most
// capacity = ceil(N * k / E * factor) of a forward's N tokens' slots; kProbs keeps the slots with the highest routing
// weights, kPosition the earliest tokens. Dropped slots contribute nothing (their weight is 0).
enum class TokenDropPolicy { kProbs, kPosition };
struct ExpertCapacity {
  double factor = 0;  // 0: no capacity (no token dropped)
  TokenDropPolicy policy = TokenDropPolicy::kProbs;
};

struct MoeLayerSpec {
  int64_t hidden = 0;               // C
  int64_t num_experts = 0;          // E
  int64_t top_k = 1;                // k
  int64_t expert_intermediate = 0;  // F of each routed expert
  bool norm_topk_prob = false;
  int64_t shared_intermediate = 0;  // F of the shared expert; 0 = none
  RouterKind router = RouterKind::kSoftmax;
  double routed_scaling_factor = 1.0;  // DeepSeek routers only
  bool group_limited = false;          // kDeepseekSoftmax: group_limited_greedy (kDeepseekSigmoid always groups)
  int64_t n_group = 1;
  int64_t topk_group = 1;
  std::string shared_name = "shared_expert";  // "shared_experts" for DeepSeek
  bool shared_bias = false;                   // DeepSeek-V2's mlp_bias
  ExpertParallel ep = {};                     // which experts this rank holds
};

// Which experts each token goes to, and with what weight.
struct Routing {
  torch::Tensor logits;   // [N, E] in the input dtype, fp32 for DeepSeek routers (what the aux loss reads)
  torch::Tensor weights;  // [N, k] in the input dtype (fp32 for DeepSeek routers, as HF)
  torch::Tensor experts;  // [N, k] int64
  torch::Tensor kept;     // [N, k] bool: the slots within capacity (ExpertCapacity); undefined: every slot
};

// One SwiGLU expert: down(silu(gate(x)) * up(x)).
class ExpertMlpImpl : public torch::nn::Module {
 public:
  ExpertMlpImpl(int64_t hidden, int64_t intermediate, const LinearFactory& factory, const torch::TensorOptions& options,
                bool bias = false);
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
  Routing RouteDeepseek(const torch::Tensor& x);
  // x [N, C] -> [N, C]: the routed experts by sorted dispatch (no shared expert); under expert parallelism
  // the slots of other ranks' experts go there and back by all-to-all (a collective over spec.ep.comm).
  torch::Tensor Dispatch(const torch::Tensor& x, const Routing& routing);
  // The local experts on token slots sorted by expert: x [S, C] with counts[i] slots for local expert i
  // (counts on the host, summing to S) -> [S, C] unweighted outputs.
  torch::Tensor RunLocalExperts(const torch::Tensor& x, const std::vector<int64_t>& counts);
  // Routed expert `e` (a global id); it must be held here.
  ExpertMlp Expert(int64_t e) const;
  // gathered [S, C] sorted by expert with counts [E] (host) -> [S, C]: the all-to-all path of Dispatch.
  torch::Tensor DispatchExpertParallel(const torch::Tensor& gathered, const torch::Tensor& counts);
  // x [N, C] -> [N, C]: the same as Dispatch, computed densely (every expert on every token). For tests.
  torch::Tensor DenseReference(const torch::Tensor& x, const Routing& routing);

  // Attach (or with nullptr detach) a vector that forward appends this layer's router logits to.
  void CollectRouterLogits(std::vector<torch::Tensor>* sink) { sink_ = sink; }
  std::vector<torch::Tensor>* router_logits_sink() const { return sink_; }
  const MoeLayerSpec& spec() const { return spec_; }

  // Load counting (auxiliary-loss-free balancing; kDeepseekSigmoid only): on zeroes the load, off drops it.
  void CountLoad(bool on);
  bool counts_load() const { return load_.defined(); }
  // The next forwards (until DisarmLoadCount) count: their routed slots within capacity go to the load (while
  // counting), their dropped slots to the dropped count; token_weight [N] (1 = token, 0 = padding; undefined:
  // every token counts) is the flattened attention mask of their input.
  void ArmLoadCount(const torch::Tensor& token_weight);
  void DisarmLoadCount();
  // The load [E] (fp32 slot counts) since the last take, leaving zeros.
  torch::Tensor TakeLoad();
  // Token dropping from the next forward on (ExpertCapacity{}: none), in training and evaluation alike as
  // Megatron-core; armed forwards (ArmLoadCount: CausalLM::RunLayers' training forwards) count the dropped slots,
  // which TakeDroppedSlots returns (and zeroes).
  void SetCapacity(const ExpertCapacity& capacity) { capacity_ = capacity; }
  // routing [N, k] -> a [N, k] bool mask of the slots within their expert's capacity (Megatron-core's rule).
  torch::Tensor CapacityMask(const Routing& routing) const;
  int64_t TakeDroppedSlots();
  // DeepSeek-V3's update (Megatron-core's get_updated_expert_bias): bias += rate * sign(mean(load) - load).
  // load [E] summed over every data-parallel rank, so every rank applies the same update.
  void UpdateExpertBias(const torch::Tensor& load, double rate);

  Linear gate{nullptr};
  // "experts": its children are the held routed experts, named by their global ids ("5").
  std::shared_ptr<torch::nn::Module> experts;
  ExpertMlp shared_expert{nullptr};       // registered as spec.shared_name
  torch::Tensor e_score_correction_bias;  // [E] fp32 buffer of `gate` (kDeepseekSigmoid only)

 private:
  MoeLayerSpec spec_;
  std::vector<ExpertMlp> local_;  // the held experts, by local index
  std::vector<torch::Tensor>* sink_ = nullptr;
  torch::Tensor load_;  // [E] fp32 while counting; undefined otherwise
  bool load_armed_ = false;
  torch::Tensor load_weight_;  // [N] fp32 of the armed forward, or undefined (every token)
  ExpertCapacity capacity_;
  int64_t dropped_slots_ = 0;
};
TORCH_MODULE(SparseMoe);

// HF's load_balancing_loss_func (Switch Transformer eq. 4-6, as Qwen3-MoE computes it): over all layers'
// router logits [N, E], f_e = (top-k assignments to e) / tokens, P_e = mean softmax probability of e;
// loss = E * sum_e f_e * P_e. attention_mask [B, T] (1 = token; N = B * T), when defined, leaves padding out.
// Returns an fp32 scalar; 0 when there are no logits.
torch::Tensor LoadBalancingLoss(const std::vector<torch::Tensor>& router_logits, int64_t num_experts, int64_t top_k,
                                const torch::Tensor& attention_mask);

}  // namespace anneal::model
