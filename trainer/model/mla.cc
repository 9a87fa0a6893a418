#include "trainer/model/mla.h"

#include <ATen/ATen.h>

#include <cmath>

#include "trainer/model/decoder.h"

namespace anneal::model {
namespace {

double YarnMscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// [.., D] -> [.., D]: (-x2, x1)
torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// x [B, H, T, Dr], cos/sin [B, T, Dr] (cat(freqs, freqs)). Interleaved pairs are gathered into halves first
// (evens, then odds), which is what HF's apply_rotary_pos_emb_interleave returns; V2's complex form returns the
// pairs in place, a permutation of the same values applied to q and k alike.
torch::Tensor ApplyRotary(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin, bool interleave) {
  if (interleave) {
    x = torch::cat({x.slice(-1, 0, x.size(-1), 2), x.slice(-1, 1, x.size(-1), 2)}, -1);
  }
  return x * cos.unsqueeze(1) + RotateHalf(x) * sin.unsqueeze(1);
}

}  // namespace

double MlaSoftmaxScale(const ModelConfig& c) {
  double scale = std::pow(static_cast<double>(c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim), -0.5);
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type != RopeScalingType::kNone && rs.mscale_all_dim != 0) {
    const double m = YarnMscale(rs.factor, rs.mscale_all_dim);
    scale = scale * m * m;
  }
  return scale;
}

MlaAttentionImpl::MlaAttentionImpl(const ModelConfig& c, const LinearFactory& f, int64_t layer_index)
    : mla_(c.mla), heads_(c.num_attention_heads), layer_index_(layer_index), scale_(MlaSoftmaxScale(c)) {
  const auto opts = torch::TensorOptions().dtype(DtypeFromName(c.torch_dtype));
  const int64_t C = c.hidden_size, H = heads_;
  const int64_t qk = mla_.qk_nope_head_dim + mla_.qk_rope_head_dim;
  auto make = [&](const char* role, int64_t in, int64_t out, bool bias) {
    return register_module(role, f.Make({in, out, bias, role, LinearSplit::kNone}, opts));
  };
  if (mla_.q_lora_rank == 0) {
    q_proj = make("q_proj", C, H * qk, false);
  } else {
    q_a_proj = make("q_a_proj", C, mla_.q_lora_rank, c.attention_bias);
    q_a_layernorm = register_module("q_a_layernorm", RMSNorm(mla_.q_lora_rank, 1e-6, opts));
    q_b_proj = make("q_b_proj", mla_.q_lora_rank, H * qk, false);
  }
  kv_a_proj_with_mqa = make("kv_a_proj_with_mqa", C, mla_.kv_lora_rank + mla_.qk_rope_head_dim, c.attention_bias);
  // HF builds both latent norms with the default eps (1e-6), not rms_norm_eps.
  kv_a_layernorm = register_module("kv_a_layernorm", RMSNorm(mla_.kv_lora_rank, 1e-6, opts));
  kv_b_proj = make("kv_b_proj", mla_.kv_lora_rank, H * (mla_.qk_nope_head_dim + mla_.v_head_dim), false);
  o_proj = make("o_proj", H * mla_.v_head_dim, C, c.attention_bias);
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> MlaAttentionImpl::CacheShapes(int64_t batch,
                                                                                    int64_t capacity) const {
  return {{batch, heads_, capacity, mla_.qk_nope_head_dim + mla_.qk_rope_head_dim},
          {batch, heads_, capacity, mla_.v_head_dim}};
}

torch::Tensor MlaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                        const std::optional<torch::Tensor>& mask, KvCache* cache) {
  const int64_t B = x.size(0), T = x.size(1), H = heads_;
  const int64_t Dn = mla_.qk_nope_head_dim, Dr = mla_.qk_rope_head_dim, Dv = mla_.v_head_dim;
  // [B, T, C] -> [B, T, H*(Dn+Dr)] -> [B, H, T, Dn+Dr]
  torch::Tensor q = q_proj ? q_proj->forward(x) : q_b_proj->forward(q_a_layernorm->forward(q_a_proj->forward(x)));
  q = q.view({B, T, H, Dn + Dr}).transpose(1, 2);
  torch::Tensor q_nope = q.narrow(-1, 0, Dn), q_rot = q.narrow(-1, Dn, Dr);
  // [B, T, C] -> [B, T, L + Dr] -> latent [B, T, L] and the shared rotary key [B, 1, T, Dr]
  torch::Tensor compressed = kv_a_proj_with_mqa->forward(x);
  torch::Tensor latent = kv_a_layernorm->forward(compressed.narrow(-1, 0, mla_.kv_lora_rank));
  torch::Tensor k_rot = compressed.narrow(-1, mla_.kv_lora_rank, Dr).view({B, 1, T, Dr});
  q_rot = ApplyRotary(q_rot, cos, sin, mla_.rope_interleave);
  k_rot = ApplyRotary(k_rot, cos, sin, mla_.rope_interleave);
  // [B, T, L] -> [B, T, H*(Dn+Dv)] -> [B, H, T, Dn+Dv]
  torch::Tensor kv = kv_b_proj->forward(latent).view({B, T, H, Dn + Dv}).transpose(1, 2);
  torch::Tensor k = torch::cat({kv.narrow(-1, 0, Dn), k_rot.expand({B, H, T, Dr})}, -1);  // [B, H, T, Dn+Dr]
  torch::Tensor v = kv.narrow(-1, Dn, Dv);                                                // [B, H, T, Dv]
  q = torch::cat({q_nope, q_rot}, -1);
  bool causal = !mask.has_value();
  if (cache != nullptr) {
    const int64_t past = cache->length;
    torch::Tensor& ck = cache->keys[layer_index_];
    torch::Tensor& cv = cache->values[layer_index_];
    ck.narrow(2, past, T).copy_(k);
    cv.narrow(2, past, T).copy_(v);
    k = ck.narrow(2, 0, past + T);
    v = cv.narrow(2, 0, past + T);
    if (past > 0) causal = false;
    TORCH_CHECK(!(past > 0 && T > 1 && !mask.has_value()), "multi-token decoding over a cache needs an explicit mask");
  }
  // [B, H, T, Dn+Dr] x [B, H, S, Dn+Dr] -> [B, H, T, Dv]
  torch::Tensor out = at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, causal, scale_);
  // [B, H, T, Dv] -> [B, T, H*Dv] -> [B, T, C]
  return o_proj->forward(out.transpose(1, 2).reshape({B, T, H * Dv}));
}

}  // namespace anneal::model
