// ModelConfig: the architecture of a LLaMA-family decoder, read from a Hugging Face config.json.
//
// Supported model_type values: llama (LLaMA 2/3, DeepSeek-LLM, DeepSeek-R1-Distill-Llama), qwen2 (Qwen2,
// Qwen2.5, DeepSeek-R1-Distill-Qwen), mistral, qwen3 (per-head RMSNorm on q and k), qwen3_moe (qwen3's
// attention with sparse mixture-of-experts MLPs, trainer/model/moe.h), deepseek_v2 and deepseek_v3 (Multi-head
// Latent Attention, trainer/model/mla.h, with DeepSeek's MoE routing). Anything else, or an option we do not
// implement, is an INVALID_ARGUMENT error that names the key and lists what is supported; nothing is silently
// ignored.
//
// Thread-safety: a plain value.
//
// Example:
//   ASSIGN_OR_RETURN(ModelConfig cfg, LoadModelConfig("/models/llama-3-8b"));
//   int64_t kv = cfg.num_key_value_heads;
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace anneal::model {

enum class RopeScalingType { kNone, kLinear, kDynamic, kLlama3, kYarn };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;  // llama3 and yarn
  // yarn only (transformers' _compute_yarn_parameters; 0 = absent where HF tests truthiness).
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;
  double mscale_all_dim = 0.0;
  std::optional<double> attention_factor;  // cos/sin scale; derived from factor and mscale(s) when absent
  bool truncate = true;
};

// Multi-head Latent Attention (deepseek_v2, deepseek_v3). The rotary head dim is ModelConfig::head_dim
// (= qk_rope_head_dim, as HF sets it).
struct MlaConfig {
  bool enabled = false;
  int64_t q_lora_rank = 0;        // 0: a plain q_proj (DeepSeek-V2-Lite); else q_a_proj -> norm -> q_b_proj
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  bool rope_interleave = true;    // rotary pairs are (x0, x1), (x2, x3), ... (V2 always; V3's rope_interleave)
};

// Mixture-of-experts MLPs (qwen3_moe; the fields DeepSeek-V2/V3 need join here). num_experts == 0: dense.
struct MoeConfig {
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 1;         // top-k
  int64_t moe_intermediate_size = 0;       // F of each routed expert
  bool norm_topk_prob = false;             // renormalise the top-k routing weights to sum to 1
  int64_t decoder_sparse_step = 1;         // layer i is sparse when (i + 1) % step == 0 ...
  std::vector<int64_t> mlp_only_layers;    // ... and i is not listed here
  int64_t shared_expert_intermediate_size = 0;  // 0: no shared expert (qwen3_moe has none)
  double router_aux_loss_coef = 0.001;     // weight of the load-balancing loss when training
  bool output_router_logits = false;       // HF adds the aux loss to the training loss only when true
  // DeepSeek-V2/V3 (deepseek_moe): layers >= first_k_dense_replace are sparse; shared experts of
  // n_shared_experts * moe_intermediate_size; top-k weights times routed_scaling_factor; no aux loss (HF's
  // DeepseekV2/V3ForCausalLM add none).
  bool deepseek_moe = false;
  int64_t first_k_dense_replace = 0;
  int64_t n_shared_experts = 0;
  double routed_scaling_factor = 1.0;
  bool sigmoid_scoring = false;            // V3: sigmoid scores + e_score_correction_bias; V2: softmax
  bool group_limited = false;              // V2 group_limited_greedy (V3 always groups)
  int64_t n_group = 1;
  int64_t topk_group = 1;
};

struct ModelConfig {
  std::string model_type = "llama";        // llama, qwen2, mistral, qwen3, qwen3_moe, deepseek_v2, deepseek_v3
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 128;                  // explicit in config.json, else hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 4096;
  bool attention_bias = false;             // q/k/v (and o for llama's attention_bias) biases
  bool o_proj_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::optional<int64_t> sliding_window;   // mistral (and qwen2 with use_sliding_window)
  std::string torch_dtype = "float32";     // float32, bfloat16, float16
  double initializer_range = 0.02;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;     // the first one when config.json lists several
  std::optional<int64_t> pad_token_id;
  std::string hidden_act = "silu";
  bool qk_norm = false;                    // qwen3, qwen3_moe: RMSNorm over each q and k head before RoPE
  MoeConfig moe;
  MlaConfig mla;
  // Whether decoder layer `layer` has a sparse MoE MLP (HF's Qwen3MoeDecoderLayer rule, or DeepSeek's
  // first_k_dense_replace).
  bool IsMoeLayer(int64_t layer) const;
};

// Parses config.json text. `source` names it in messages.
StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& json, const std::string& source);
// Reads <dir>/config.json.
StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// The HF config.json for this config (what `model init` writes and exports carry).
nlohmann::json ModelConfigToJson(const ModelConfig& config);

}  // namespace anneal::model
