// Multi-head Latent Attention (DeepSeek-V2/V3; HF's DeepseekV2Attention / DeepseekV3Attention).
//
//   q = q_proj(x)                                   (q_lora_rank 0, as DeepSeek-V2-Lite)
//     | q_b_proj(q_a_layernorm(q_a_proj(x)))        [B, T, H*(Dn+Dr)]  -> per head (q_nope [Dn], q_rot [Dr])
//   (c, k_rot) = kv_a_proj_with_mqa(x)              [B, T, L + Dr]     (L = kv_lora_rank; k_rot is one head)
//   (k_nope, v) = kv_b_proj(kv_a_layernorm(c))      [B, T, H*(Dn+Dv)]
//   q_rot, k_rot get RoPE over Dr = qk_rope_head_dim (rope_interleave: rotary pairs are (x0, x1), (x2, x3), ...,
//   as V2 always and V3 by default lay them out; HF's outputs differ in layout between the two, but q and k get
//   the same one, so the scores are the same); k = (k_nope, k_rot broadcast to every head);
//   out = o_proj(softmax(q k^T * scale + mask) v)   scale = (Dn+Dr)^-0.5 * mscale^2, mscale =
//   0.1 * mscale_all_dim * ln(factor) + 1 when a non-default rope scaling sets mscale_all_dim (HF's
//   yarn_apply_mscale); the yarn cos/sin scale (attention_factor) comes with the rotary tables.
//
// Parameter names are HF's: self_attn.{q_proj | q_a_proj, q_a_layernorm, q_b_proj}, kv_a_proj_with_mqa,
// kv_a_layernorm, kv_b_proj, o_proj. attention_bias adds biases to q_a_proj, kv_a_proj_with_mqa and o_proj only.
// Every projection is a plain Linear (no tensor-parallel split: the trainer refuses tp > 1 for these models), so
// LoRA attaches to each by its peft module name.
// The KV cache holds the expanded per-head keys [B, H, capacity, Dn+Dr] and values [B, H, capacity, Dv].
//
// Thread-safety: one thread at a time (LibTorch modules).
//
// Example:
//   MlaAttention attn(config, LinearFactory(), /*layer_index=*/0);
//   torch::Tensor y = attn->forward(x, cos, sin, std::nullopt, nullptr);   // [B, T, C] -> [B, T, C]
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>

#include "trainer/model/config.h"
#include "trainer/model/linear.h"
#include "trainer/model/norm.h"

namespace anneal::model {

struct KvCache;

// HF's yarn_apply_mscale: the softmax scale of MLA for a config.
double MlaSoftmaxScale(const ModelConfig& config);

class MlaAttentionImpl : public torch::nn::Module {
 public:
  MlaAttentionImpl(const ModelConfig& config, const LinearFactory& factory, int64_t layer_index);
  // x [B, T, C], cos/sin [B, T, Dr] -> [B, T, C]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::optional<torch::Tensor>& mask, KvCache* cache);
  // The cache shapes of this layer for a batch and capacity: keys [B, H, cap, Dn+Dr], values [B, H, cap, Dv].
  std::pair<std::vector<int64_t>, std::vector<int64_t>> CacheShapes(int64_t batch, int64_t capacity) const;

  Linear q_proj{nullptr}, q_a_proj{nullptr}, q_b_proj{nullptr}, kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr},
      o_proj{nullptr};
  RMSNorm q_a_layernorm{nullptr}, kv_a_layernorm{nullptr};

 private:
  MlaConfig mla_;
  int64_t heads_, layer_index_;
  double scale_;
};
TORCH_MODULE(MlaAttention);

}  // namespace anneal::model
