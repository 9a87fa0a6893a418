#include "trainer/model/presets.h"

#include <nlohmann/json.hpp>

#include "common/fsutil.h"

namespace anneal::model {

StatusOr<ModelConfig> PresetConfig(const std::string& arch, const std::string& preset, int64_t vocab_size) {
  if (arch != "llama" && arch != "qwen2" && arch != "mistral" && arch != "qwen3" && arch != "qwen3_moe" &&
      arch != "deepseek_v2" && arch != "deepseek_v3") {
    return InvalidArgumentError("--arch: unknown architecture '" + arch +
                                "' (supported: llama, qwen2, mistral, qwen3, qwen3_moe, deepseek_v2, deepseek_v3)");
  }
  ModelConfig c;
  c.model_type = arch;
  if (preset == "tiny") {
    c.hidden_size = 64; c.num_hidden_layers = 2; c.num_attention_heads = 4; c.num_key_value_heads = 2;
    c.intermediate_size = 176; c.max_position_embeddings = 2048;
  } else if (preset == "small") {
    c.hidden_size = 256; c.num_hidden_layers = 4; c.num_attention_heads = 8; c.num_key_value_heads = 4;
    c.intermediate_size = 688; c.max_position_embeddings = 4096;
  } else if (preset == "1b") {
    c.hidden_size = 2048; c.num_hidden_layers = 16; c.num_attention_heads = 32; c.num_key_value_heads = 8;
    c.intermediate_size = 8192; c.max_position_embeddings = 131072; c.rope_theta = 500000.0;
    if (arch == "llama") {
      c.rope_scaling = {RopeScalingType::kLlama3, 32.0, 1.0, 4.0, 8192};
      c.tie_word_embeddings = true;
    }
  } else {
    return InvalidArgumentError("--preset: unknown preset '" + preset + "' (supported: tiny, small, 1b)");
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.vocab_size = vocab_size > 0 ? vocab_size : (preset == "1b" ? 128256 : 1024);
  c.rms_norm_eps = 1e-5;
  if (arch == "qwen2") {
    c.attention_bias = true;
    c.rms_norm_eps = 1e-6;
    c.rope_theta = 1000000.0;
    c.tie_word_embeddings = preset != "1b";
  }
  if (arch == "mistral") c.sliding_window = 4096;
  if (arch == "qwen3" || arch == "qwen3_moe") {
    c.qk_norm = true;
    c.rms_norm_eps = 1e-6;
    c.rope_theta = 1000000.0;
    c.tie_word_embeddings = arch == "qwen3" && preset != "1b";
  }
  if (arch == "qwen3_moe") {
    // A few small experts per sparse layer (Qwen3-30B-A3B's shape, scaled down: 128 experts, top-8).
    c.moe.num_experts = preset == "1b" ? 64 : 8;
    c.moe.num_experts_per_tok = 2;
    c.moe.moe_intermediate_size = c.intermediate_size / 4;
    c.moe.norm_topk_prob = true;
  }
  if (arch == "deepseek_v2" || arch == "deepseek_v3") {
    // DeepSeek-V2-Lite's shape (no q_lora_rank, greedy softmax routing, 2 shared experts) and V3's (compressed
    // queries, sigmoid routing over groups, 1 shared expert), scaled down; the first layer dense.
    const bool v3 = arch == "deepseek_v3";
    const int64_t C = c.hidden_size;
    c.num_key_value_heads = c.num_attention_heads;
    c.mla = {.enabled = true,
             .q_lora_rank = v3 ? C / 2 : 0,
             .kv_lora_rank = C / 4,
             .qk_nope_head_dim = C / c.num_attention_heads,
             .qk_rope_head_dim = C / (2 * c.num_attention_heads),
             .v_head_dim = C / c.num_attention_heads,
             .rope_interleave = true};
    c.head_dim = c.mla.qk_rope_head_dim;
    c.rms_norm_eps = 1e-6;
    c.tie_word_embeddings = false;
    MoeConfig& m = c.moe;
    m.deepseek_moe = true;
    m.num_experts = preset == "1b" ? 64 : 8;
    m.num_experts_per_tok = 2;
    m.moe_intermediate_size = c.intermediate_size / 4;
    m.first_k_dense_replace = 1;
    m.n_shared_experts = v3 ? 1 : 2;
    m.sigmoid_scoring = v3;
    m.norm_topk_prob = v3;
    m.routed_scaling_factor = v3 ? 2.5 : 1.0;
    m.n_group = v3 ? 4 : 1;
    m.topk_group = v3 ? 2 : 1;
  }
  return c;
}

StatusOr<TokenizerFacts> ReadTokenizerFacts(const std::string& dir) {
  using json = nlohmann::json;
  ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/tokenizer.json"));
  json tok = json::parse(text, nullptr, false);
  if (tok.is_discarded() || !tok.is_object()) return InvalidArgumentError(dir + "/tokenizer.json: not valid JSON");
  TokenizerFacts f;
  std::map<std::string, int64_t> added;
  if (tok.contains("model") && tok["model"].contains("vocab") && tok["model"]["vocab"].is_object()) {
    for (auto& [_, id] : tok["model"]["vocab"].items()) {
      if (id.is_number_integer()) f.vocab_size = std::max(f.vocab_size, id.get<int64_t>() + 1);
    }
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (auto& t : tok["added_tokens"]) {
      if (!t.contains("id") || !t.contains("content")) continue;
      const int64_t id = t["id"].get<int64_t>();
      added[t["content"].get<std::string>()] = id;
      f.vocab_size = std::max(f.vocab_size, id + 1);
    }
  }
  if (f.vocab_size == 0) return InvalidArgumentError(dir + "/tokenizer.json: no vocabulary found");
  auto cfg_text = ReadFile(dir + "/tokenizer_config.json");
  if (cfg_text.ok()) {
    json cfg = json::parse(*cfg_text, nullptr, false);
    auto lookup = [&](const char* key) -> std::optional<int64_t> {
      if (cfg.is_discarded() || !cfg.contains(key)) return std::nullopt;
      const json& v = cfg[key];
      std::string s = v.is_string() ? v.get<std::string>() : (v.is_object() ? v.value("content", "") : "");
      auto it = added.find(s);
      if (it == added.end()) return std::nullopt;
      return it->second;
    };
    f.bos_token_id = lookup("bos_token");
    f.eos_token_id = lookup("eos_token");
    f.pad_token_id = lookup("pad_token");
  }
  return f;
}

}  // namespace anneal::model
