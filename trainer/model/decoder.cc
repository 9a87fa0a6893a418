#include "trainer/model/decoder.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/embedding.h>
#include <torch/nn/functional/loss.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "trainer/kernels/rmsnorm.h"
#include "trainer/model/rng.h"

namespace anneal::model {

// ---- RMSNorm -------------------------------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_in, const torch::TensorOptions& options) : eps(eps_in) {
  weight = register_parameter("weight", torch::ones({dim}, options));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (x.is_cuda() && !torch::GradMode::is_enabled()) return kernels::RmsNorm(x, weight, eps);
  return kernels::RmsNormReference(x, weight, eps);
}

// ---- Rotary embeddings ---------------------------------------------------------------------------------------

namespace {

// transformers' _compute_yarn_parameters: (inv_freq [D/2] fp32, attention_factor).
std::pair<torch::Tensor, double> YarnInvFreq(const ModelConfig& config) {
  const RopeScaling& rs = config.rope_scaling;
  const double dim = static_cast<double>(config.head_dim), base = config.rope_theta, factor = rs.factor;
  auto get_mscale = [](double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; };
  double attention_factor = 0;
  if (rs.attention_factor) {
    attention_factor = *rs.attention_factor;
  } else if (rs.mscale != 0 && rs.mscale_all_dim != 0) {
    attention_factor = get_mscale(factor, rs.mscale) / get_mscale(factor, rs.mscale_all_dim);
  } else {
    attention_factor = get_mscale(factor, 1.0);
  }
  const double orig = static_cast<double>(rs.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(orig / (rotations * 2 * M_PI))) / (2 * std::log(base));
  };
  double low = correction_dim(rs.beta_fast), high = correction_dim(rs.beta_slow);
  if (rs.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;  // prevent a singularity
  torch::Tensor pos_freqs =
      torch::pow(base, torch::arange(0, config.head_dim, 2, torch::kInt64).to(torch::kFloat32) / dim);
  torch::Tensor extrapolation = 1.0 / pos_freqs;
  torch::Tensor interpolation = 1.0 / (factor * pos_freqs);
  torch::Tensor ramp = torch::clamp((torch::arange(config.head_dim / 2, torch::kFloat32) - low) / (high - low), 0, 1);
  torch::Tensor extrapolation_factor = 1 - ramp;
  return {interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor, attention_factor};
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const ModelConfig& config) : config_(config) {
  const int64_t dim = config.head_dim;
  // inv_freq = 1 / theta^(2i / D), i in [0, D/2): computed in fp32 exactly as transformers does.
  torch::Tensor exponent = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  torch::Tensor inv_freq = 1.0 / torch::pow(config.rope_theta, exponent);
  const RopeScaling& rs = config.rope_scaling;
  if (rs.type == RopeScalingType::kLinear) {
    inv_freq = inv_freq / rs.factor;
  } else if (rs.type == RopeScalingType::kYarn) {
    std::tie(inv_freq, attention_factor_) = YarnInvFreq(config);
  } else if (rs.type == RopeScalingType::kLlama3) {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    torch::Tensor wavelen = 2 * M_PI / inv_freq;
    torch::Tensor llama = torch::where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq);
    torch::Tensor smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    torch::Tensor smoothed = (1 - smooth) * llama / rs.factor + smooth * llama;
    torch::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq = torch::where(medium, smoothed, llama);
  }
  base_inv_freq_ = inv_freq;
}

torch::Tensor RotaryEmbedding::InvFreq(int64_t seq_len, const torch::Device& device) const {
  const RopeScaling& rs = config_.rope_scaling;
  if (rs.type == RopeScalingType::kDynamic && seq_len > config_.max_position_embeddings) {
    // Dynamic NTK: grow the base with the sequence length (transformers' _compute_dynamic_ntk_parameters).
    const double dim = static_cast<double>(config_.head_dim);
    const double base =
        config_.rope_theta *
        std::pow((rs.factor * seq_len / config_.max_position_embeddings) - (rs.factor - 1), dim / (dim - 2));
    torch::Tensor exponent = torch::arange(0, config_.head_dim, 2, torch::kInt64).to(torch::kFloat32) / dim;
    return (1.0 / torch::pow(base, exponent)).to(device);
  }
  return base_inv_freq_.to(device);
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::CosSin(const torch::Tensor& position_ids,
                                                                torch::ScalarType dtype) const {
  const int64_t seq_len = position_ids.numel() == 0 ? 0 : position_ids.max().item<int64_t>() + 1;
  torch::Tensor inv_freq = InvFreq(seq_len, position_ids.device());                 // [D/2]
  torch::Tensor freqs = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [B, T, D/2]
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);                               // [B, T, D]
  if (attention_factor_ != 1.0)
    return {(emb.cos() * attention_factor_).to(dtype), (emb.sin() * attention_factor_).to(dtype)};
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

namespace {

// [.., D] -> [.., D]: (-x2, x1)
torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// x [B, H, T, D], cos/sin [B, T, D]
torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x * cos.unsqueeze(1) + RotateHalf(x) * sin.unsqueeze(1);
}

}  // namespace

// ---- Attention -----------------------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(const ModelConfig& c, const LinearFactory& f, int64_t layer_index)
    : heads_(c.num_attention_heads),
      kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim),
      layer_index_(layer_index) {
  const auto opts = torch::TensorOptions().dtype(DtypeFromName(c.torch_dtype));
  q_proj = register_module(
      "q_proj", f.Make({c.hidden_size, heads_ * head_dim_, c.attention_bias, "q_proj", LinearSplit::kColumn}, opts));
  k_proj = register_module(
      "k_proj", f.Make({c.hidden_size, kv_heads_ * head_dim_, c.attention_bias, "k_proj", LinearSplit::kColumn}, opts));
  v_proj = register_module(
      "v_proj", f.Make({c.hidden_size, kv_heads_ * head_dim_, c.attention_bias, "v_proj", LinearSplit::kColumn}, opts));
  o_proj = register_module(
      "o_proj", f.Make({heads_ * head_dim_, c.hidden_size, c.o_proj_bias, "o_proj", LinearSplit::kRow}, opts));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(head_dim_, c.rms_norm_eps, opts));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, c.rms_norm_eps, opts));
  }
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                     const std::optional<torch::Tensor>& mask, KvCache* cache) {
  // Under tensor parallelism the projections hold a shard of the heads, and with sequence parallelism their
  // output covers the whole sequence while x holds a part of it: take every size from the projections.
  torch::Tensor q_out = q_proj->forward(x), k_out = k_proj->forward(x), v_out = v_proj->forward(x);
  const int64_t B = q_out.size(0), T = q_out.size(1);
  const int64_t H = q_out.size(2) / head_dim_;
  const int64_t K = k_out.size(2) / head_dim_;
  // [B, T, C] -> [B, T, H*D] -> [B, H, T, D]
  torch::Tensor q = q_out.view({B, T, H, head_dim_});
  torch::Tensor k = k_out.view({B, T, K, head_dim_});
  if (q_norm) {  // Qwen3: each head normalised over D before RoPE
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  torch::Tensor v = v_out.view({B, T, K, head_dim_}).transpose(1, 2);
  q = ApplyRotary(q, cos, sin);
  k = ApplyRotary(k, cos, sin);
  bool causal = !mask.has_value();
  if (cache != nullptr) {
    // Append to the preallocated cache [B, K, capacity, D]; attend over [0, length + T).
    const int64_t past = cache->length;
    torch::Tensor& ck = cache->keys[layer_index_];
    torch::Tensor& cv = cache->values[layer_index_];
    ck.narrow(2, past, T).copy_(k);
    cv.narrow(2, past, T).copy_(v);
    k = ck.narrow(2, 0, past + T);
    v = cv.narrow(2, 0, past + T);
    // With a past, "is_causal" would align the triangle to the top-left corner; a single query needs no mask.
    if (past > 0) causal = false;
    if (past > 0 && T > 1 && !mask.has_value()) {
      TORCH_CHECK(false, "multi-token decoding over a cache needs an explicit mask");
    }
  }
  // [B, H, T, D] x [B, K, S, D] -> [B, H, T, D]; GQA: each group of H/K query heads shares one kv head.
  torch::Tensor out = at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, causal,
                                                       /*scale=*/std::nullopt, /*enable_gqa=*/H != K);
  // [B, H, T, D] -> [B, T, H*D] -> [B, T, C]
  return o_proj->forward(out.transpose(1, 2).reshape({B, T, H * head_dim_}));
}

// ---- MLP -----------------------------------------------------------------------------------------------------

MlpImpl::MlpImpl(const ModelConfig& c, const LinearFactory& f) {
  const auto opts = torch::TensorOptions().dtype(DtypeFromName(c.torch_dtype));
  gate_proj = register_module(
      "gate_proj", f.Make({c.hidden_size, c.intermediate_size, c.mlp_bias, "gate_proj", LinearSplit::kColumn}, opts));
  up_proj = register_module(
      "up_proj", f.Make({c.hidden_size, c.intermediate_size, c.mlp_bias, "up_proj", LinearSplit::kColumn}, opts));
  down_proj = register_module(
      "down_proj", f.Make({c.intermediate_size, c.hidden_size, c.mlp_bias, "down_proj", LinearSplit::kRow}, opts));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  // [B, T, C] -> [B, T, F] -> [B, T, C]
  return down_proj->forward(torch::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

// ---- Layers --------------------------------------------------------------------------------------------------

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, const LinearFactory& f, int64_t layer_index,
                                   const torch::TensorOptions& options, const ExpertParallel& ep) {
  if (c.mla.enabled) {
    mla = register_module("self_attn", MlaAttention(c, f, layer_index));
  } else {
    self_attn = register_module("self_attn", Attention(c, f, layer_index));
  }
  if (c.IsMoeLayer(layer_index)) {
    MoeLayerSpec spec{.hidden = c.hidden_size,
                      .num_experts = c.moe.num_experts,
                      .top_k = c.moe.num_experts_per_tok,
                      .expert_intermediate = c.moe.moe_intermediate_size,
                      .norm_topk_prob = c.moe.norm_topk_prob,
                      .shared_intermediate = c.moe.shared_expert_intermediate_size,
                      .ep = ep};
    if (c.moe.deepseek_moe) {
      spec.router = c.moe.sigmoid_scoring ? RouterKind::kDeepseekSigmoid : RouterKind::kDeepseekSoftmax;
      spec.routed_scaling_factor = c.moe.routed_scaling_factor;
      spec.group_limited = c.moe.group_limited;
      spec.n_group = c.moe.n_group;
      spec.topk_group = c.moe.topk_group;
      spec.shared_intermediate = c.moe.moe_intermediate_size * c.moe.n_shared_experts;
      spec.shared_name = "shared_experts";
      spec.shared_bias = c.mlp_bias;
    }
    moe = register_module("mlp", SparseMoe(spec, f, options));
  } else {
    mlp = register_module("mlp", Mlp(c, f));
  }
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                        const std::optional<torch::Tensor>& mask, KvCache* cache) {
  torch::Tensor normed_in = input_layernorm->forward(x);
  torch::Tensor h =
      x + (mla ? mla->forward(normed_in, cos, sin, mask, cache) : self_attn->forward(normed_in, cos, sin, mask, cache));
  torch::Tensor normed = post_attention_layernorm->forward(h);
  return h + (moe ? moe->forward(normed) : mlp->forward(normed));
}

namespace {
// Stands in for a decoder layer held by another pipeline stage: no parameters, never run.
class AbsentLayerImpl : public torch::nn::Module {};
}  // namespace

DecoderModelImpl::DecoderModelImpl(const ModelConfig& c, const LinearFactory& f, const torch::TensorOptions& options,
                                   const StageSpec& stage) {
  // The last stage needs the embedding too when the head is tied to it.
  if (stage.first || (stage.last && c.tie_word_embeddings)) {
    embed_tokens = register_module("embed_tokens", f.MakeEmbedding(c.vocab_size, c.hidden_size, options));
  }
  layers = register_module("layers", torch::nn::ModuleList());
  const int64_t end = stage.layer_end < 0 ? c.num_hidden_layers : stage.layer_end;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    if (i >= stage.layer_begin && i < end) {
      layers->push_back(DecoderLayer(c, f, i, options, stage.experts));
    } else {
      layers->push_back(std::make_shared<AbsentLayerImpl>());
    }
  }
  if (stage.last) norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

// ---- Masks ---------------------------------------------------------------------------------------------------

std::optional<torch::Tensor> BuildAttentionMask(const ForwardInputs& in, int64_t B, int64_t T, int64_t past,
                                                std::optional<int64_t> sliding_window, const torch::Device& device) {
  const int64_t S = past + T;
  const bool has_padding = in.attention_mask.defined() && !in.attention_mask.all().item<bool>();
  const bool has_segments = in.segment_ids.defined();
  const bool window_bites = sliding_window.has_value() && S > *sliding_window;
  if (!has_padding && !has_segments && !window_bites) {
    return std::nullopt;  // plain causal (or, for one query over a cache, everything)
  }
  auto long_opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  torch::Tensor q_pos = torch::arange(past, S, long_opts).view({T, 1});  // [T, 1]
  torch::Tensor k_pos = torch::arange(0, S, long_opts).view({1, S});     // [1, S]
  torch::Tensor allowed = (k_pos <= q_pos);                              // [T, S]
  if (window_bites) allowed = allowed.logical_and(q_pos - k_pos < *sliding_window);
  allowed = allowed.view({1, 1, T, S}).expand({B, 1, T, S});
  if (has_padding) {
    torch::Tensor keys_ok = in.attention_mask.to(device).to(torch::kBool).view({B, 1, 1, S});
    allowed = allowed.logical_and(keys_ok);
  }
  if (has_segments) {
    TORCH_CHECK(past == 0, "packed segments cannot be combined with a KV cache");
    torch::Tensor seg = in.segment_ids.to(device);
    allowed = allowed.logical_and((seg.view({B, 1, T, 1}) == seg.view({B, 1, 1, S})));
  }
  // A query with nothing to attend to (a padding row) would give NaN: let it attend to itself.
  torch::Tensor diag = (k_pos == q_pos).view({1, 1, T, S});
  return allowed.logical_or(diag.logical_and(allowed.any(-1, /*keepdim=*/true).logical_not()));
}

// ---- Activation checkpointing --------------------------------------------------------------------------------

namespace {

// autograd::Function::apply needs defined tensors (VariableInfo reads each input's device), so "no mask" (no
// padding: e.g. one row, or rows of equal length) travels as an empty tensor.
torch::Tensor MaskArgument(const std::optional<torch::Tensor>& mask, const torch::Device& device) {
  return mask ? *mask : torch::empty({0}, torch::TensorOptions().device(device));
}
std::optional<torch::Tensor> OptionalMask(const torch::Tensor& mask) {
  return mask.defined() && mask.numel() > 0 ? std::optional<torch::Tensor>(mask) : std::nullopt;
}

// Runs `layer` with its MoE router logits (if it is sparse and collecting) redirected into `routed`.
torch::Tensor ForwardRouted(DecoderLayerImpl* layer, const torch::Tensor& x, const torch::Tensor& cos,
                            const torch::Tensor& sin, const torch::Tensor& mask, std::vector<torch::Tensor>* routed) {
  SparseMoeImpl* moe = layer->moe ? layer->moe.get() : nullptr;
  std::vector<torch::Tensor>* sink = moe ? moe->router_logits_sink() : nullptr;
  if (sink != nullptr) moe->CollectRouterLogits(routed);
  torch::Tensor y = layer->forward(x, cos, sin, OptionalMask(mask), nullptr);
  if (sink != nullptr) moe->CollectRouterLogits(sink);
  return y;
}

// Calls the model's LayerUseHook (its address; 0: none) for `layer`.
void UseLayer(int64_t hook_address, int64_t layer, bool in_use) {
  const auto* hook = reinterpret_cast<const CausalLMImpl::LayerUseHook*>(hook_address);
  if (hook != nullptr && *hook) (*hook)(layer, in_use);
}

// Runs one decoder layer without keeping its activations; backward recomputes them (between LayerUseHook calls,
// so ZeRO-3 gathers the layer's parameters for the forward and again for the recomputation). Outputs: the layer's
// output, then the router logits of a collecting MoE layer, so the load-balancing loss built on them sends its
// gradient back through the recomputed router.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                                                torch::Tensor cos, torch::Tensor sin, torch::Tensor mask,
                                                int64_t layer_address, int64_t hook_address, int64_t layer_index) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(layer_address);
    ctx->saved_data["layer"] = layer_address;
    ctx->saved_data["hook"] = hook_address;
    ctx->saved_data["index"] = layer_index;
    // The RNG of the device the layer runs on (and the CPU's): dropout in the recomputed forward draws the same
    // masks as this one.
    const RngState rng = RngState::Capture(x.device());
    ctx->saved_data["rng.cpu"] = rng.cpu;
    if (rng.device.defined()) ctx->saved_data["rng.device"] = rng.device;
    ctx->save_for_backward({x, cos, sin, mask});
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> routed;
    UseLayer(hook_address, layer_index, true);
    torch::autograd::variable_list out{ForwardRouted(layer, x, cos, sin, mask, &routed)};
    UseLayer(hook_address, layer_index, false);
    out.insert(out.end(), routed.begin(), routed.end());
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    const c10::Device device = saved[0].device();
    const RngState rng_now = RngState::Capture(device);
    RngState forward_rng{ctx->saved_data["rng.cpu"].toTensor(), {}, device};
    if (ctx->saved_data.count("rng.device")) forward_rng.device = ctx->saved_data["rng.device"].toTensor();
    forward_rng.Restore();
    torch::Tensor x = saved[0].detach().requires_grad_(true);
    std::vector<torch::Tensor> routed;
    torch::Tensor y;
    const int64_t hook_address = ctx->saved_data["hook"].toInt(), layer_index = ctx->saved_data["index"].toInt();
    UseLayer(hook_address, layer_index, true);
    {
      torch::AutoGradMode enable(true);
      y = ForwardRouted(layer, x, saved[1], saved[2], saved[3], &routed);
    }
    std::vector<torch::Tensor> outputs{y}, grads{grad_out[0]};
    for (size_t i = 0; i < routed.size() && i + 1 < grad_out.size(); ++i) {
      outputs.push_back(routed[i]);
      grads.push_back(grad_out[i + 1]);
    }
    rng_now.Restore();
    torch::autograd::backward(outputs, grads);
    UseLayer(hook_address, layer_index, false);
    return {x.grad(),        torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

// ---- CausalLM ------------------------------------------------------------------------------------------------

CausalLMImpl::CausalLMImpl(ModelConfig config, const torch::TensorOptions& options,
                           std::shared_ptr<const LinearFactory> factory, StageSpec stage)
    : config_(std::move(config)),
      factory_(factory ? std::move(factory) : std::make_shared<LinearFactory>()),
      stage_(stage),
      rotary_(config_) {
  if (stage_.layer_end < 0) stage_.layer_end = config_.num_hidden_layers;
  config_.torch_dtype = DtypeName(options.dtype().toScalarType());
  model = register_module("model", DecoderModel(config_, *factory_, options, stage_));
  if (!config_.tie_word_embeddings && stage_.last) {
    // Split by vocabulary rows under tensor parallelism (vocab-parallel head).
    lm_head = register_module(
        "lm_head",
        factory_->Make({config_.hidden_size, config_.vocab_size, false, "lm_head", LinearSplit::kColumn}, options));
  }
}

bool CausalLMImpl::HasSparseLayers() const {
  return config_.moe.num_experts > 0;
}

void CausalLMImpl::CollectRouterLogits(bool on) {
  router_logits_.clear();
  // HF's DeepseekV2/V3ForCausalLM add no load-balancing loss (whatever aux_loss_alpha or output_router_logits say).
  if (config_.moe.deepseek_moe) on = false;
  for (const auto& layer : model->layers->children()) {
    auto* decoder_layer = layer->as<DecoderLayerImpl>();
    if (decoder_layer != nullptr && decoder_layer->moe)
      decoder_layer->moe->CollectRouterLogits(on ? &router_logits_ : nullptr);
  }
}

torch::Tensor CausalLMImpl::TakeAuxLoss(const torch::Tensor& attention_mask) {
  torch::Tensor aux =
      LoadBalancingLoss(router_logits_, config_.moe.num_experts, config_.moe.num_experts_per_tok, attention_mask);
  router_logits_.clear();
  return aux * config_.moe.router_aux_loss_coef;
}

std::vector<torch::Tensor> CausalLMImpl::TakeRouterLogits() {
  std::vector<torch::Tensor> taken;
  taken.swap(router_logits_);
  return taken;
}

torch::Tensor CausalLMImpl::head_weight() {
  return config_.tie_word_embeddings ? model->embed_tokens->weight : lm_head->weight;
}

torch::Tensor CausalLMImpl::RunLayers(torch::Tensor x, const ForwardInputs& in, int64_t begin, int64_t end) {
  // The sequence length of the inputs (x may hold a part of it under sequence parallelism).
  const int64_t B = x.size(0), T = in.input_ids.defined() ? in.input_ids.size(1) : x.size(1);
  const int64_t past = in.cache ? in.cache->length : 0;
  torch::Tensor pos = in.position_ids;
  if (!pos.defined()) {
    pos = torch::arange(past, past + T, torch::TensorOptions().dtype(torch::kInt64).device(x.device()))
              .unsqueeze(0)
              .expand({B, T});
  }
  auto [cos, sin] = rotary_.CosSin(pos.to(x.device()), x.scalar_type());  // [B, T, D]
  std::optional<torch::Tensor> mask = BuildAttentionMask(in, B, T, past, config_.sliding_window, x.device());
  const bool grad = torch::GradMode::is_enabled();
  // Under a LayerUseHook (ZeRO-3) autograd must not hold the parameters between forward and backward.
  const bool checkpoint = ((checkpointing_ && is_training()) || layer_use_hook_) && grad && in.cache == nullptr;
  TORCH_CHECK(!layer_use_hook_ || !grad || checkpoint,
              "a KV cache with gradients enabled cannot run with sharded (ZeRO-3) parameters");
  const int64_t hook_address = layer_use_hook_ ? reinterpret_cast<int64_t>(&layer_use_hook_) : 0;
  // A frozen embedding gives an input without grad; the checkpointed layers still need a graph to recompute
  // into (transformers' enable_input_require_grads does the same for LoRA with gradient checkpointing).
  if (checkpoint && !x.requires_grad()) x = x.detach().requires_grad_(true);
  // Expert loads (auxiliary-loss-free balancing) and dropped slots (capacity) count training forwards only, once per
  // micro-batch: the layer is armed for this call (its first forward) and disarmed before a checkpoint's
  // recomputation.
  const bool count_load = is_training() && grad;
  for (int64_t i = begin; i < end; ++i) {
    auto* layer = model->layers[i]->as<DecoderLayerImpl>();
    TORCH_CHECK(layer != nullptr, "decoder layer ", i, " is held by another pipeline stage");
    SparseMoeImpl* counting = count_load && layer->moe ? layer->moe.get() : nullptr;
    if (counting != nullptr) counting->ArmLoadCount(in.attention_mask);
    if (checkpoint) {
      torch::autograd::variable_list out = CheckpointedLayer::apply(x, cos, sin, MaskArgument(mask, x.device()),
                                                                    reinterpret_cast<int64_t>(layer), hook_address, i);
      x = out[0];
      router_logits_.insert(router_logits_.end(), out.begin() + 1, out.end());
    } else {
      UseLayer(hook_address, i, true);
      x = layer->forward(x, cos, sin, mask, in.cache);
      UseLayer(hook_address, i, false);
    }
    if (counting != nullptr) counting->DisarmLoadCount();
  }
  return x;
}

torch::Tensor CausalLMImpl::Embed(const torch::Tensor& input_ids) {
  TORCH_CHECK(stage_.first, "Embed on a pipeline stage without the embedding");
  return AddEmbeddingNoise(model->embed_tokens->forward(input_ids));  // [B, T] -> [B, T, C]
}

torch::Tensor CausalLMImpl::AddEmbeddingNoise(torch::Tensor x) {
  if (embedding_noise_alpha_ <= 0 || !is_training()) return x;
  // transformers' neftune_post_forward_hook: mag_norm = alpha / sqrt(tensor(T * C)) in float32, then
  // zeros_like(output).uniform_(-mag_norm, mag_norm).
  const float dims = static_cast<float>(x.size(1) * x.size(2));
  const float mag_norm = static_cast<float>(embedding_noise_alpha_) / std::sqrt(dims);
  return x + torch::zeros_like(x).uniform_(-mag_norm, mag_norm);
}

torch::Tensor CausalLMImpl::FinalNorm(const torch::Tensor& x) {
  TORCH_CHECK(stage_.last, "FinalNorm on a pipeline stage without the final norm");
  return model->norm->forward(x);
}

torch::Tensor CausalLMImpl::Forward(const ForwardInputs& in) {
  TORCH_CHECK(stage_.first && stage_.last, "Forward needs the whole model; pipeline stages run their part");
  // [B, T] -> [B, T, C]
  torch::Tensor x = AddEmbeddingNoise(model->embed_tokens->forward(in.input_ids));
  const int64_t T = in.input_ids.size(1);
  if (in.cache != nullptr && in.cache->keys.empty()) {
    // Preallocate [B, K, capacity, D] per layer.
    const int64_t cap = std::max<int64_t>(in.cache->capacity, T);
    in.cache->capacity = cap;
    for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
      auto* layer = model->layers[i]->as<DecoderLayerImpl>();
      if (layer->mla) {
        auto [key_shape, value_shape] = layer->mla->CacheShapes(x.size(0), cap);
        in.cache->keys.push_back(torch::zeros(key_shape, x.options()));
        in.cache->values.push_back(torch::zeros(value_shape, x.options()));
        continue;
      }
      const int64_t K = layer->self_attn->k_proj->local_out() / config_.head_dim;
      in.cache->keys.push_back(torch::zeros({x.size(0), K, cap, config_.head_dim}, x.options()));
      in.cache->values.push_back(torch::zeros({x.size(0), K, cap, config_.head_dim}, x.options()));
    }
  }
  TORCH_CHECK(in.cache == nullptr || in.cache->length + T <= in.cache->capacity, "KV cache capacity exceeded");
  x = RunLayers(x, in, 0, config_.num_hidden_layers);
  if (in.cache != nullptr) in.cache->length += T;
  return model->norm->forward(x);
}

torch::Tensor CausalLMImpl::Logits(const torch::Tensor& hidden) {
  // [.., C] x [V, C]^T -> [.., V]
  return factory_->FullLogits(factory_->HeadLogits(hidden, head_weight()));
}

std::pair<torch::Tensor, int64_t> CausalLMImpl::LossSum(const torch::Tensor& hidden,
                                                        const torch::Tensor& shifted_labels) {
  // logits [N, V] in fp32, labels [N]; -100 ignored. Sum (not mean) so gradient accumulation can normalise by
  // the token count of the whole accumulated batch.
  // Under tensor parallelism the logits are this rank's vocabulary piece [N, V/tp].
  torch::Tensor logits = factory_->HeadLogits(hidden, head_weight()).to(torch::kFloat32);
  logits = logits.reshape({-1, logits.size(-1)});
  torch::Tensor labels = shifted_labels.reshape({-1}).to(logits.device());
  const int64_t count = (labels != -100).sum().item<int64_t>();
  return {factory_->CrossEntropySum(logits, labels), count};
}

std::vector<std::pair<std::string, torch::Tensor>> CausalLMImpl::HfStateDict() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (item.key().find(".lora_") != std::string::npos) continue;
    out.emplace_back(item.key(), item.value());
  }
  for (const auto& item : named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<LayoutParam> CausalLMImpl::LayoutParameters() {
  // Owner module of each parameter: "a.b.q_proj.weight" -> ("a.b.q_proj", "weight"); LoRA factors live one
  // level down ("a.b.q_proj.lora_A" holds "weight") and take their layout from the Linear above them.
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  for (const auto& item : named_modules("", /*include_self=*/false)) modules[item.key()] = item.value();
  auto layout_of = [&](const std::string& name) -> ParamLayout {
    const auto dot = name.rfind('.');
    if (dot == std::string::npos) return {};
    std::string owner = name.substr(0, dot), local = name.substr(dot + 1);
    for (const char* lora : {".lora_A", ".lora_B"}) {
      const std::string suffix = lora;
      if (owner.size() > suffix.size() && owner.compare(owner.size() - suffix.size(), suffix.size(), suffix) == 0) {
        local = suffix.substr(1) + "." + local;
        owner = owner.substr(0, owner.size() - suffix.size());
      }
    }
    // q_norm / k_norm are replicated; under tensor parallelism each rank normalises only its own heads, so
    // their gradients are partial whenever the sibling q_proj is split.
    for (const char* norm : {".q_norm", ".k_norm"}) {
      const std::string suffix = norm;
      if (owner.size() > suffix.size() && owner.compare(owner.size() - suffix.size(), suffix.size(), suffix) == 0) {
        auto q = modules.find(owner.substr(0, owner.size() - suffix.size()) + ".q_proj");
        auto* lin = q == modules.end() ? nullptr : dynamic_cast<LinearImpl*>(q->second.get());
        ParamLayout layout;
        layout.partial_grad = lin != nullptr && lin->Layout("weight").sharded();
        return layout;
      }
    }
    auto it = modules.find(owner);
    if (it == modules.end()) return {};
    if (auto* lin = dynamic_cast<LinearImpl*>(it->second.get())) return lin->Layout(local);
    if (auto* emb = dynamic_cast<EmbeddingImpl*>(it->second.get())) return emb->Layout();
    return {};
  };
  std::vector<LayoutParam> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    out.push_back({item.key(), item.value(), layout_of(item.key())});
  }
  for (const auto& item : named_buffers(/*recurse=*/true)) out.push_back({item.key(), item.value(), {}});
  return out;
}

torch::Tensor ShiftLabels(const torch::Tensor& labels) {
  // [B, T] -> [B, T]: position t is trained to predict token t+1.
  torch::Tensor shifted = torch::full_like(labels, -100);
  const int64_t T = labels.size(1);
  if (T > 1) shifted.narrow(1, 0, T - 1).copy_(labels.narrow(1, 1, T - 1));
  return shifted;
}

torch::ScalarType DtypeFromName(const std::string& name) {
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return torch::kFloat16;
  return torch::kFloat32;
}

std::string DtypeName(torch::ScalarType t) {
  if (t == torch::kBFloat16) return "bfloat16";
  if (t == torch::kFloat16) return "float16";
  return "float32";
}

}  // namespace anneal::model
