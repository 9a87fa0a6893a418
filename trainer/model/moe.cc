#include "trainer/model/moe.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/nn/functional/activation.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/status.h"
#include "trainer/parallel/comm.h"

namespace anneal::model {

// ---- Experts -------------------------------------------------------------------------------------------------

ExpertMlpImpl::ExpertMlpImpl(int64_t hidden, int64_t intermediate, const LinearFactory& f,
                             const torch::TensorOptions& options, bool bias) {
  // Under tensor parallelism an expert is split like a dense MLP (Megatron-core's default expert tensor parallel
  // size = tp): gate/up by columns, down by rows, its partial outputs summed over the tp group by down_proj.
  gate_proj =
      register_module("gate_proj", f.Make({hidden, intermediate, bias, "gate_proj", LinearSplit::kColumn}, options));
  up_proj = register_module("up_proj", f.Make({hidden, intermediate, bias, "up_proj", LinearSplit::kColumn}, options));
  down_proj =
      register_module("down_proj", f.Make({intermediate, hidden, bias, "down_proj", LinearSplit::kRow}, options));
}

torch::Tensor ExpertMlpImpl::forward(const torch::Tensor& x) {
  // [.., C] -> [.., F] -> [.., C]
  return down_proj->forward(torch::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

// ---- The sparse block ----------------------------------------------------------------------------------------

SparseMoeImpl::SparseMoeImpl(const MoeLayerSpec& spec, const LinearFactory& f, const torch::TensorOptions& options)
    : spec_(spec) {
  ANNEAL_CHECK(spec.num_experts > 0 && spec.top_k > 0 && spec.top_k <= spec.num_experts);
  gate = register_module("gate", f.Make({spec.hidden, spec.num_experts, false, "gate", LinearSplit::kNone}, options));
  ANNEAL_CHECK(spec.ep.size >= 1 && spec.num_experts % spec.ep.size == 0 && spec.ep.rank < spec.ep.size);
  ANNEAL_CHECK(spec.ep.size == 1 || spec.ep.comm != nullptr);
  experts = register_module("experts", std::make_shared<torch::nn::Module>());
  const int64_t first = spec.ep.First(spec.num_experts);
  for (int64_t e = first; e < first + spec.ep.Count(spec.num_experts); ++e) {
    local_.push_back(
        experts->register_module(std::to_string(e), ExpertMlp(spec.hidden, spec.expert_intermediate, f, options)));
  }
  if (spec.shared_intermediate > 0) {
    shared_expert = register_module(spec.shared_name,
                                    ExpertMlp(spec.hidden, spec.shared_intermediate, f, options, spec.shared_bias));
  }
  if (spec.router == RouterKind::kDeepseekSigmoid || spec.group_limited) {
    ANNEAL_CHECK(spec.n_group > 0 && spec.num_experts % spec.n_group == 0 && spec.topk_group <= spec.n_group);
  }
  if (spec.router == RouterKind::kDeepseekSigmoid) {
    e_score_correction_bias = gate->register_buffer("e_score_correction_bias",
                                                    torch::zeros({spec.num_experts}, options.dtype(torch::kFloat32)));
  }
}

namespace {

// scores [N, E] -> a [N, E] bool mask of the experts in each token's topk_group best groups, a group's score
// being `group_score` of its [N, G, E/G] slice.
template <typename GroupScore>
torch::Tensor GroupMask(const torch::Tensor& scores, int64_t n_group, int64_t topk_group, GroupScore group_score) {
  const int64_t N = scores.size(0), E = scores.size(1);
  torch::Tensor groups = group_score(scores.view({N, n_group, E / n_group}));  // [N, G]
  torch::Tensor group_idx = std::get<1>(torch::topk(groups, topk_group, -1, /*largest=*/true, /*sorted=*/false));
  torch::Tensor group_mask = torch::zeros_like(groups).scatter(1, group_idx, 1.0);  // [N, G]
  return group_mask.unsqueeze(-1).expand({N, n_group, E / n_group}).reshape({N, E}).to(torch::kBool);
}

}  // namespace

Routing SparseMoeImpl::RouteDeepseek(const torch::Tensor& x) {
  // HF's DeepseekV2TopkRouter / DeepseekV3TopkRouter: everything in fp32.
  Routing r;
  r.logits = torch::linear(x.to(torch::kFloat32), gate->weight.to(torch::kFloat32));  // [N, E]
  const int64_t k = spec_.top_k;
  if (spec_.router == RouterKind::kDeepseekSoftmax) {
    torch::Tensor scores = torch::softmax(r.logits, -1, torch::kFloat32);
    if (spec_.group_limited) {
      torch::Tensor keep = GroupMask(scores, spec_.n_group, spec_.topk_group,
                                     [](const torch::Tensor& g) { return std::get<0>(g.max(-1)); });
      scores = scores.masked_fill(keep.logical_not(), 0.0);
    }
    auto [top, idx] = torch::topk(scores, k, -1, /*largest=*/true, /*sorted=*/false);
    r.weights = top * spec_.routed_scaling_factor;
    r.experts = idx;
    return r;
  }
  torch::Tensor scores = r.logits.sigmoid();
  torch::Tensor choice = scores + e_score_correction_bias;
  torch::Tensor keep = GroupMask(choice, spec_.n_group, spec_.topk_group,
                                 [](const torch::Tensor& g) { return std::get<0>(g.topk(2, -1)).sum(-1); });
  choice = choice.masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity());
  r.experts = std::get<1>(torch::topk(choice, k, -1, /*largest=*/true, /*sorted=*/false));
  torch::Tensor w = scores.gather(1, r.experts);
  if (spec_.norm_topk_prob) w = w / (w.sum(-1, /*keepdim=*/true) + 1e-20);
  r.weights = w * spec_.routed_scaling_factor;
  return r;
}

Routing SparseMoeImpl::Route(const torch::Tensor& x) {
  if (spec_.router != RouterKind::kSoftmax) return RouteDeepseek(x);
  Routing r;
  r.logits = gate->forward(x);  // [N, E]
  torch::Tensor probs = torch::softmax(r.logits, -1, torch::kFloat32);
  auto [top, idx] = torch::topk(probs, spec_.top_k, -1);  // [N, k] each
  if (spec_.norm_topk_prob) top = top / top.sum(-1, /*keepdim=*/true);
  r.weights = top.to(r.logits.scalar_type());
  r.experts = idx;
  return r;
}

ExpertMlp SparseMoeImpl::Expert(int64_t e) const {
  ANNEAL_CHECK(spec_.ep.Holds(e, spec_.num_experts));
  return local_[static_cast<size_t>(e - spec_.ep.First(spec_.num_experts))];
}

torch::Tensor SparseMoeImpl::RunLocalExperts(const torch::Tensor& x, const std::vector<int64_t>& counts) {
  std::vector<torch::Tensor> outputs;
  int64_t begin = 0;
  for (size_t i = 0; i < local_.size(); ++i) {
    if (counts[i] == 0) continue;
    outputs.push_back(local_[i]->forward(x.narrow(0, begin, counts[i])));
    begin += counts[i];
  }
  if (outputs.empty()) return x.narrow(0, 0, 0).clone();  // no slots
  return torch::cat(outputs, 0);
}

namespace {

// The all-to-all of token slots as an autograd function: backward sends the gradients back the way the slots
// came (the reverse all-to-all, splits swapped).
class AllToAllSlots : public torch::autograd::Function<AllToAllSlots> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, parallel::Comm* comm,
                               const std::vector<int64_t>& in_splits, const std::vector<int64_t>& out_splits) {
    ctx->saved_data["comm"] = reinterpret_cast<int64_t>(comm);
    ctx->saved_data["in"] = in_splits;
    ctx->saved_data["out"] = out_splits;
    return comm->AllToAll(x, in_splits, out_splits);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<parallel::Comm*>(ctx->saved_data["comm"].toInt());
    const std::vector<int64_t> in = ctx->saved_data["in"].toIntVector();
    const std::vector<int64_t> out = ctx->saved_data["out"].toIntVector();
    return {comm->AllToAll(grads[0], out, in), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor SparseMoeImpl::Dispatch(const torch::Tensor& x, const Routing& r) {
  const int64_t k = spec_.top_k, E = spec_.num_experts;
  // Token slots [S] (S = N*k, or the slots within capacity) sorted by expert: slot s of the sorted order is token
  // order[s] / k going to flat_experts[order[s]]; equal experts keep token order (stable), so results do not
  // depend on ties. Dropped slots (r.kept false) are not dispatched: they contribute nothing.
  torch::Tensor flat_experts = r.experts.reshape({-1});
  torch::Tensor kept_slots = r.kept.defined() ? r.kept.reshape({-1}).nonzero().squeeze(1) : torch::Tensor();
  torch::Tensor slot_experts = kept_slots.defined() ? flat_experts.index_select(0, kept_slots) : flat_experts;
  torch::Tensor order = std::get<1>(slot_experts.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  if (kept_slots.defined()) order = kept_slots.index_select(0, order);                        // back to slot ids
  torch::Tensor tokens = order.div(k, "floor");                                               // [S]
  torch::Tensor slot_weights = r.weights.reshape({-1}).index_select(0, order).unsqueeze(-1);  // [S, 1]
  torch::Tensor gathered = x.index_select(0, tokens);  // [S, C], grouped by expert
  // Slots per expert, on the host.
  torch::Tensor counts = torch::bincount(slot_experts, /*weights=*/{}, E).cpu();
  torch::Tensor y;
  if (spec_.ep.size == 1) {
    const int64_t* c = counts.data_ptr<int64_t>();
    y = RunLocalExperts(gathered, std::vector<int64_t>(c, c + E));
  } else {
    y = DispatchExpertParallel(gathered, counts);
  }
  y = y * slot_weights;  // [N*k, C]
  return torch::zeros_like(x).index_add(0, tokens, y.to(x.scalar_type()));
}

// gathered [S, C]: this rank's slots sorted by (global) expert, counts [E] on the host -> [S, C] the experts'
// unweighted outputs in the same order. Slots go to their expert's rank in one all-to-all (each source's block
// sorted by expert); the owner regroups them by local expert, runs its experts, and the reverse permutation and
// all-to-all bring the outputs home.
torch::Tensor SparseMoeImpl::DispatchExpertParallel(const torch::Tensor& gathered, const torch::Tensor& counts) {
  const int64_t ep = spec_.ep.size, L = spec_.ep.Count(spec_.num_experts);
  parallel::Comm* comm = spec_.ep.comm;
  // How many slots each source sends to each of this rank's experts: [ep, L] (row j from rank j).
  const std::vector<int64_t> ones(static_cast<size_t>(ep), 1);
  torch::Tensor sent = counts.view({ep, L}).to(gathered.device());
  torch::Tensor received = comm->AllToAll(sent, ones, ones).cpu().contiguous();
  const int64_t* rc = received.data_ptr<int64_t>();
  std::vector<int64_t> in_splits(ep), out_splits(ep), local_counts(L, 0);
  const torch::Tensor per_rank = counts.view({ep, L}).sum(1).contiguous();
  for (int64_t j = 0; j < ep; ++j) {
    in_splits[j] = per_rank.data_ptr<int64_t>()[j];
    out_splits[j] = 0;
    for (int64_t i = 0; i < L; ++i) {
      out_splits[j] += rc[j * L + i];
      local_counts[i] += rc[j * L + i];
    }
  }
  torch::Tensor arrived = AllToAllSlots::apply(gathered, comm, in_splits, out_splits);  // [R, C] by source
  // Regroup by local expert: row order (expert i, source j) from (source j, expert i).
  std::vector<int64_t> source_offset(ep * L);
  int64_t at = 0;
  for (int64_t j = 0; j < ep; ++j) {
    for (int64_t i = 0; i < L; ++i) {
      source_offset[j * L + i] = at;
      at += rc[j * L + i];
    }
  }
  std::vector<int64_t> by_expert;
  by_expert.reserve(static_cast<size_t>(at));
  for (int64_t i = 0; i < L; ++i) {
    for (int64_t j = 0; j < ep; ++j) {
      for (int64_t s = 0; s < rc[j * L + i]; ++s) by_expert.push_back(source_offset[j * L + i] + s);
    }
  }
  torch::Tensor perm = torch::tensor(by_expert, torch::kInt64).to(gathered.device());
  torch::Tensor out = RunLocalExperts(arrived.index_select(0, perm), local_counts);
  // Back to source order (the inverse permutation), then home.
  torch::Tensor inverse = torch::empty_like(perm).scatter_(0, perm, torch::arange(at, perm.options()));
  return AllToAllSlots::apply(out.index_select(0, inverse), comm, out_splits, in_splits);
}

torch::Tensor SparseMoeImpl::DenseReference(const torch::Tensor& x, const Routing& r) {
  // weight of expert e for each token: [N, E] (zero where e is not among its top-k)
  torch::Tensor dense_weights =
      torch::zeros({x.size(0), spec_.num_experts}, r.weights.options()).scatter_add(1, r.experts, r.weights);
  torch::Tensor y = torch::zeros_like(x);
  for (int64_t e = 0; e < spec_.num_experts; ++e) {
    y = y + Expert(e)->forward(x) * dense_weights.select(1, e).unsqueeze(-1);
  }
  return y;
}

torch::Tensor SparseMoeImpl::forward(const torch::Tensor& x) {
  // [B, T, C] -> [N, C] -> [B, T, C]
  torch::Tensor flat = x.reshape({-1, x.size(-1)});
  Routing r = Route(flat);
  if (sink_ != nullptr && is_training()) sink_->push_back(r.logits);  // evaluation adds no aux loss
  if (capacity_.factor > 0) {
    r.kept = CapacityMask(r);
    if (load_armed_) dropped_slots_ += r.kept.numel() - r.kept.sum().item<int64_t>();
  }
  if (load_armed_ && load_.defined()) {
    // Slots per expert (those kept, as Megatron-core counts its routing map), each token weighted by its mask value
    // (padding 0): [N] -> [N * k] -> [E].
    torch::Tensor weight =
        load_weight_.defined() ? load_weight_.to(load_.device()) : torch::ones({flat.size(0)}, load_.options());
    TORCH_CHECK(weight.size(0) == flat.size(0), "expert load: ", weight.size(0), " token weights for ", flat.size(0),
                " tokens");
    torch::Tensor slot_weight = weight.repeat_interleave(spec_.top_k);
    if (r.kept.defined()) slot_weight = slot_weight * r.kept.reshape({-1}).to(slot_weight.device(), torch::kFloat32);
    load_.index_add_(0, r.experts.reshape({-1}).to(load_.device()), slot_weight);
  }
  torch::Tensor y = Dispatch(flat, r);
  if (shared_expert) y = y + shared_expert->forward(flat);
  return y.view(x.sizes());
}

void SparseMoeImpl::CountLoad(bool on) {
  TORCH_CHECK(!on || e_score_correction_bias.defined(),
              "expert load counting needs a router with e_score_correction_bias (sigmoid routing)");
  load_ = on ? torch::zeros({spec_.num_experts}, e_score_correction_bias.options()) : torch::Tensor();
  load_armed_ = false;
  load_weight_ = torch::Tensor();
}

void SparseMoeImpl::ArmLoadCount(const torch::Tensor& token_weight) {
  load_armed_ = true;
  load_weight_ = token_weight.defined() ? token_weight.reshape({-1}).to(torch::kFloat32) : torch::Tensor();
}

void SparseMoeImpl::DisarmLoadCount() {
  load_armed_ = false;
  load_weight_ = torch::Tensor();
}

torch::Tensor SparseMoeImpl::TakeLoad() {
  TORCH_CHECK(load_.defined(), "TakeLoad: load counting is off");
  torch::Tensor load = load_.clone();
  load_.zero_();
  return load;
}

int64_t SparseMoeImpl::TakeDroppedSlots() {
  const int64_t dropped = dropped_slots_;
  dropped_slots_ = 0;
  return dropped;
}

torch::Tensor SparseMoeImpl::CapacityMask(const Routing& r) const {
  // Megatron-core's topk_softmax_with_capacity: capacity = ceil((N * k / E) * factor) slots per expert; the dense
  // routing weights [N, E] (probs) or the routing map (position) pick which tokens each expert keeps, by torch.topk
  // down the tokens; kept = routed and picked.
  const int64_t N = r.experts.size(0), E = spec_.num_experts;
  const double per_expert = static_cast<double>(N * spec_.top_k) / static_cast<double>(E);
  const int64_t capacity = std::min<int64_t>(N, static_cast<int64_t>(std::ceil(per_expert * capacity_.factor)));
  torch::Tensor map =
      torch::zeros({N, E}, r.experts.options().dtype(torch::kInt32)).scatter(1, r.experts, 1);  // [N, E]
  torch::Tensor picked;
  if (capacity_.policy == TokenDropPolicy::kProbs) {
    torch::Tensor gates = torch::zeros({N, E}, r.weights.options()).scatter(1, r.experts, r.weights.detach());
    picked = std::get<1>(torch::topk(gates, capacity, 0, /*largest=*/true, /*sorted=*/false));
  } else {
    picked = std::get<1>(torch::topk(map, capacity, 0, /*largest=*/true, /*sorted=*/false));
  }
  torch::Tensor within = torch::zeros({N, E}, r.experts.options().dtype(torch::kBool)).scatter(0, picked, true);
  return within.logical_and(map.to(torch::kBool)).gather(1, r.experts);  // [N, k]
}

void SparseMoeImpl::UpdateExpertBias(const torch::Tensor& load, double rate) {
  // Megatron-core's get_updated_expert_bias: average = sum / E; bias + sign(average - load) * rate.
  torch::NoGradGuard no_grad;
  torch::Tensor l = load.to(e_score_correction_bias.device(), torch::kFloat32);
  torch::Tensor average = l.sum(-1, /*keepdim=*/true) / static_cast<double>(l.size(-1));
  e_score_correction_bias.add_(torch::sign(average - l) * rate);
}

std::optional<int64_t> RoutedExpertOf(const std::string& name) {
  static const std::string kMarker = ".mlp.experts.";
  const size_t at = name.find(kMarker);
  if (at == std::string::npos) return std::nullopt;
  const size_t begin = at + kMarker.size(), end = name.find('.', begin);
  if (end == std::string::npos || end == begin) return std::nullopt;
  int64_t e = 0;
  for (size_t i = begin; i < end; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    e = e * 10 + (name[i] - '0');
  }
  return e;
}

torch::Tensor LoadBalancingLoss(const std::vector<torch::Tensor>& router_logits, int64_t num_experts, int64_t top_k,
                                const torch::Tensor& attention_mask) {
  if (router_logits.empty()) return torch::zeros({}, torch::kFloat32);
  const torch::Device device = router_logits.front().device();
  auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  torch::Tensor tokens_per_expert = torch::zeros({num_experts}, fp32);
  torch::Tensor prob_per_expert = torch::zeros({num_experts}, fp32);
  torch::Tensor rows = torch::zeros({}, fp32);
  torch::Tensor mask;  // [N] fp32
  if (attention_mask.defined()) mask = attention_mask.reshape({-1}).to(fp32);
  for (const torch::Tensor& layer_logits : router_logits) {
    torch::Tensor probs = torch::softmax(layer_logits.to(device), -1);    // [N, E], as HF: in the logits dtype
    torch::Tensor selected = std::get<1>(torch::topk(probs, top_k, -1));  // [N, k]
    torch::Tensor row_weight = mask.defined() ? mask : torch::ones({layer_logits.size(0)}, fp32);  // [N]
    tokens_per_expert =
        tokens_per_expert +
        torch::zeros({num_experts}, fp32).scatter_add(0, selected.reshape({-1}), row_weight.repeat_interleave(top_k));
    prob_per_expert = prob_per_expert + (probs.to(torch::kFloat32) * row_weight.unsqueeze(-1)).sum(0);
    rows = rows + row_weight.sum();
  }
  return (tokens_per_expert / rows * (prob_per_expert / rows)).sum() * static_cast<double>(num_experts);
}

}  // namespace anneal::model
