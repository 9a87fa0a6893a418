// ModelConfig: the architecture of a LLaMA-family decoder, read from a Hugging Face config.json.
//
// Supported model_type values: llama (LLaMA 2/3, DeepSeek-LLM, DeepSeek-R1-Distill-Llama), qwen2 (Qwen2,
// Qwen2.5, DeepSeek-R1-Distill-Qwen) and mistral. Anything else, or an option we do not implement, is an
// INVALID_ARGUMENT error that names the key and lists what is supported; nothing is silently ignored.
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

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace anneal::model {

enum class RopeScalingType { kNone, kLinear, kDynamic, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type = "llama";        // llama, qwen2, mistral
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
};

// Parses config.json text. `source` names it in messages.
StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& json, const std::string& source);
// Reads <dir>/config.json.
StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// The HF config.json for this config (what `model init` writes and exports carry).
nlohmann::json ModelConfigToJson(const ModelConfig& config);

}  // namespace anneal::model
