#include "trainer/model/config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace anneal::model {
namespace {

using json = nlohmann::json;

Status KeyError(const std::string& source, const std::string& key, const std::string& what) {
  return InvalidArgumentError(source + ": key '" + key + "': " + what);
}

// Reads an integer key; missing keys keep `out`.
Status ReadInt(const json& j, const std::string& source, const char* key, int64_t& out, bool positive = true) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  if (!j[key].is_number_integer()) return KeyError(source, key, "expected an integer, got " + j[key].dump());
  out = j[key].get<int64_t>();
  if (positive && out <= 0) return KeyError(source, key, "must be positive, got " + std::to_string(out));
  return Status::Ok();
}

Status ReadDouble(const json& j, const std::string& source, const char* key, double& out) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  if (!j[key].is_number()) return KeyError(source, key, "expected a number, got " + j[key].dump());
  out = j[key].get<double>();
  return Status::Ok();
}

Status ReadBool(const json& j, const std::string& source, const char* key, bool& out) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  if (!j[key].is_boolean()) return KeyError(source, key, "expected true or false, got " + j[key].dump());
  out = j[key].get<bool>();
  return Status::Ok();
}

Status ReadTokenId(const json& j, const std::string& source, const char* key, std::optional<int64_t>& out) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  const json& v = j[key];
  if (v.is_number_integer()) {
    out = v.get<int64_t>();
  } else if (v.is_array() && !v.empty() && v[0].is_number_integer()) {
    out = v[0].get<int64_t>();  // generation stops on any of them; the first is the canonical one
  } else {
    return KeyError(source, key, "expected a token id or a list of token ids, got " + v.dump());
  }
  return Status::Ok();
}

Status ParseRopeScaling(const json& j, const std::string& source, ModelConfig& c) {
  // transformers 5 writes "rope_parameters" (with rope_theta inside); older configs write "rope_scaling".
  const bool has_scaling = j.contains("rope_scaling") && !j["rope_scaling"].is_null();
  const char* key = has_scaling ? "rope_scaling" : "rope_parameters";
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  const json& r = j[key];
  if (!r.is_object()) return KeyError(source, key, "expected an object or null, got " + r.dump());
  std::string type = r.value("rope_type", r.value("type", std::string("default")));
  if (r.contains("rope_theta") && r["rope_theta"].is_number()) c.rope_theta = r["rope_theta"].get<double>();
  if (type == "default") return Status::Ok();
  const std::string prefix = std::string(key) + ".";
  // HF's MLA softmax scale reads mscale_all_dim under any non-default rope type.
  RETURN_IF_ERROR(ReadDouble(r, source + " " + key, "mscale_all_dim", c.rope_scaling.mscale_all_dim));
  if (type == "linear") {
    c.rope_scaling.type = RopeScalingType::kLinear;
  } else if (type == "dynamic") {
    c.rope_scaling.type = RopeScalingType::kDynamic;
  } else if (type == "llama3") {
    c.rope_scaling.type = RopeScalingType::kLlama3;
    c.rope_scaling.low_freq_factor = r.value("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = r.value("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings = r.value("original_max_position_embeddings", int64_t{8192});
  } else if (type == "yarn") {
    RopeScaling& rs = c.rope_scaling;
    rs.type = RopeScalingType::kYarn;
    const std::string where = source + " " + key;
    rs.original_max_position_embeddings = c.max_position_embeddings;
    RETURN_IF_ERROR(ReadInt(r, where, "original_max_position_embeddings", rs.original_max_position_embeddings));
    // HF tests beta_fast / beta_slow / mscale for truthiness: 0 or null means the default.
    RETURN_IF_ERROR(ReadDouble(r, where, "beta_fast", rs.beta_fast));
    RETURN_IF_ERROR(ReadDouble(r, where, "beta_slow", rs.beta_slow));
    if (rs.beta_fast == 0) rs.beta_fast = 32;
    if (rs.beta_slow == 0) rs.beta_slow = 1;
    RETURN_IF_ERROR(ReadDouble(r, where, "mscale", rs.mscale));
    if (r.contains("attention_factor") && !r["attention_factor"].is_null()) {
      double f = 0;
      RETURN_IF_ERROR(ReadDouble(r, where, "attention_factor", f));
      rs.attention_factor = f;
    }
    RETURN_IF_ERROR(ReadBool(r, where, "truncate", rs.truncate));
    if (r.contains("partial_rotary_factor")) return KeyError(source, prefix + "partial_rotary_factor", "is not implemented");
    if (!r.contains("factor") || r["factor"].is_null()) {
      // DeepSeek-style configs may leave it out: the context extension ratio (as transformers derives it).
      rs.factor = static_cast<double>(c.max_position_embeddings) / static_cast<double>(rs.original_max_position_embeddings);
      return Status::Ok();
    }
  } else {
    return KeyError(source, std::string(key) + ".rope_type",
                    "unsupported rope scaling '" + type + "' (supported: default, linear, dynamic, llama3, yarn)");
  }
  if (!r.contains("factor") || !r["factor"].is_number() || r["factor"].get<double>() <= 0) {
    return KeyError(source, std::string(key) + ".factor", "a positive number is required for " + type + " scaling");
  }
  c.rope_scaling.factor = r["factor"].get<double>();
  return Status::Ok();
}

constexpr const char* kSupportedTypes = "llama, qwen2, mistral, qwen3, qwen3_moe, deepseek_v2, deepseek_v3";

bool IsQwen3(const std::string& type) { return type == "qwen3" || type == "qwen3_moe"; }

// Qwen3 sliding-window attention applies to some layers only (layer_types / max_window_layers); refused by name
// until per-layer masks exist. A window that covers no layer is accepted: it changes nothing.
Status ParseQwen3Window(const json& j, const std::string& source, const ModelConfig& c) {
  bool use_sliding = false;
  RETURN_IF_ERROR(ReadBool(j, source, "use_sliding_window", use_sliding));
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    for (const json& t : j["layer_types"]) {
      if (t != "full_attention") {
        return KeyError(source, "layer_types",
                        "layer type " + t.dump() + " is not implemented for " + c.model_type +
                            " (supported: full_attention)");
      }
    }
  }
  if (!use_sliding) return Status::Ok();
  int64_t max_window_layers = c.model_type == "qwen3" ? 28 : 0;
  RETURN_IF_ERROR(ReadInt(j, source, "max_window_layers", max_window_layers, /*positive=*/false));
  if (c.model_type == "qwen3_moe" || max_window_layers < c.num_hidden_layers) {
    return KeyError(source, "use_sliding_window",
                    c.model_type + " sliding window attention is not implemented (supported: false)");
  }
  return Status::Ok();
}

Status ParseMoe(const json& j, const std::string& source, ModelConfig& c) {
  MoeConfig& m = c.moe;
  // transformers 5 writes num_local_experts; Qwen's releases write num_experts.
  RETURN_IF_ERROR(ReadInt(j, source, "num_local_experts", m.num_experts, /*positive=*/false));
  RETURN_IF_ERROR(ReadInt(j, source, "num_experts", m.num_experts, /*positive=*/false));
  RETURN_IF_ERROR(ReadInt(j, source, "num_experts_per_tok", m.num_experts_per_tok));
  m.moe_intermediate_size = 768;
  RETURN_IF_ERROR(ReadInt(j, source, "moe_intermediate_size", m.moe_intermediate_size));
  RETURN_IF_ERROR(ReadBool(j, source, "norm_topk_prob", m.norm_topk_prob));
  RETURN_IF_ERROR(ReadInt(j, source, "decoder_sparse_step", m.decoder_sparse_step));
  RETURN_IF_ERROR(ReadDouble(j, source, "router_aux_loss_coef", m.router_aux_loss_coef));
  RETURN_IF_ERROR(ReadBool(j, source, "output_router_logits", m.output_router_logits));
  if (j.contains("mlp_only_layers") && !j["mlp_only_layers"].is_null()) {
    const json& v = j["mlp_only_layers"];
    if (!v.is_array()) return KeyError(source, "mlp_only_layers", "expected a list of layer indices, got " + v.dump());
    for (const json& i : v) {
      if (!i.is_number_integer() || i.get<int64_t>() < 0 || i.get<int64_t>() >= c.num_hidden_layers) {
        return KeyError(source, "mlp_only_layers", "entry " + i.dump() + " is not a layer index in [0, " +
                                                       std::to_string(c.num_hidden_layers) + ")");
      }
      m.mlp_only_layers.push_back(i.get<int64_t>());
    }
  }
  if (m.num_experts > 0 && m.num_experts_per_tok > m.num_experts) {
    return KeyError(source, "num_experts_per_tok",
                    std::to_string(m.num_experts_per_tok) + " exceeds num_experts " + std::to_string(m.num_experts));
  }
  return Status::Ok();
}

bool IsDeepseek(const std::string& type) { return type == "deepseek_v2" || type == "deepseek_v3"; }

// DeepseekV2Config / DeepseekV3Config (transformers 5.23) and the keys DeepSeek's own config.json files add.
Status ParseDeepseek(const json& j, const std::string& source, ModelConfig& c) {
  const bool v3 = c.model_type == "deepseek_v3";
  MlaConfig& a = c.mla;
  MoeConfig& m = c.moe;
  a.enabled = true;
  m.deepseek_moe = true;
  // Attention: MLA.
  if (j.contains("q_lora_rank") && !j["q_lora_rank"].is_null()) {
    RETURN_IF_ERROR(ReadInt(j, source, "q_lora_rank", a.q_lora_rank));
  } else if (!j.contains("q_lora_rank")) {
    a.q_lora_rank = 1536;  // HF's default; null means a plain q_proj
  }
  RETURN_IF_ERROR(ReadInt(j, source, "kv_lora_rank", a.kv_lora_rank));
  RETURN_IF_ERROR(ReadInt(j, source, "qk_nope_head_dim", a.qk_nope_head_dim));
  RETURN_IF_ERROR(ReadInt(j, source, "qk_rope_head_dim", a.qk_rope_head_dim));
  RETURN_IF_ERROR(ReadInt(j, source, "v_head_dim", a.v_head_dim));
  a.rope_interleave = true;
  if (v3) RETURN_IF_ERROR(ReadBool(j, source, "rope_interleave", a.rope_interleave));
  c.head_dim = a.qk_rope_head_dim;  // the rotary dimension, as HF sets head_dim
  if (a.qk_rope_head_dim % 2 != 0) return KeyError(source, "qk_rope_head_dim", "must be even for rotary embeddings");
  RETURN_IF_ERROR(ReadBool(j, source, "attention_bias", c.attention_bias));
  if (!v3) RETURN_IF_ERROR(ReadBool(j, source, "mlp_bias", c.mlp_bias));
  if (c.num_key_value_heads != c.num_attention_heads) {
    return KeyError(source, "num_key_value_heads",
                    std::to_string(c.num_key_value_heads) + " differs from num_attention_heads " +
                        std::to_string(c.num_attention_heads) + ": MLA expands keys and values to every head");
  }
  double dropout = 0;
  RETURN_IF_ERROR(ReadDouble(j, source, "attention_dropout", dropout));
  if (dropout != 0) return KeyError(source, "attention_dropout", "is not implemented for MLA (supported: 0)");
  // MoE.
  m.num_experts = v3 ? 256 : 64;
  RETURN_IF_ERROR(ReadInt(j, source, "n_routed_experts", m.num_experts));
  m.num_experts_per_tok = v3 ? 8 : 0;
  RETURN_IF_ERROR(ReadInt(j, source, "num_experts_per_tok", m.num_experts_per_tok));
  if (m.num_experts_per_tok <= 0) {
    return KeyError(source, "num_experts_per_tok", "missing: a positive top-k is required");
  }
  m.moe_intermediate_size = v3 ? 2048 : 1407;
  RETURN_IF_ERROR(ReadInt(j, source, "moe_intermediate_size", m.moe_intermediate_size));
  m.n_shared_experts = v3 ? 1 : 2;
  RETURN_IF_ERROR(ReadInt(j, source, "n_shared_experts", m.n_shared_experts));
  m.first_k_dense_replace = v3 ? 3 : 0;
  RETURN_IF_ERROR(ReadInt(j, source, "first_k_dense_replace", m.first_k_dense_replace, /*positive=*/false));
  m.routed_scaling_factor = v3 ? 2.5 : 1.0;
  RETURN_IF_ERROR(ReadDouble(j, source, "routed_scaling_factor", m.routed_scaling_factor));
  m.norm_topk_prob = v3;
  RETURN_IF_ERROR(ReadBool(j, source, "norm_topk_prob", m.norm_topk_prob));
  RETURN_IF_ERROR(ReadBool(j, source, "output_router_logits", m.output_router_logits));
  if (m.num_experts_per_tok > m.num_experts) {
    return KeyError(source, "num_experts_per_tok",
                    std::to_string(m.num_experts_per_tok) + " exceeds n_routed_experts " + std::to_string(m.num_experts));
  }
  // moe_layer_freq (DeepSeek's own config.json): transformers ignores it and makes every layer from
  // first_k_dense_replace on sparse, which is what 1 means.
  int64_t freq = 1;
  RETURN_IF_ERROR(ReadInt(j, source, "moe_layer_freq", freq));
  if (freq != 1) return KeyError(source, "moe_layer_freq", "only 1 is supported (transformers ignores other values)");
  m.n_group = v3 ? 8 : 1;
  m.topk_group = v3 ? 4 : 1;
  RETURN_IF_ERROR(ReadInt(j, source, "n_group", m.n_group));
  RETURN_IF_ERROR(ReadInt(j, source, "topk_group", m.topk_group));
  const std::string scoring = j.value("scoring_func", std::string(v3 ? "sigmoid" : "softmax"));
  if (v3) {
    m.sigmoid_scoring = true;
    if (scoring != "sigmoid") {
      return KeyError(source, "scoring_func", "'" + scoring + "' is not supported for deepseek_v3 (supported: sigmoid)");
    }
    const std::string method = j.value("topk_method", std::string("noaux_tc"));
    if (method != "noaux_tc") {
      return KeyError(source, "topk_method", "'" + method + "' is not supported for deepseek_v3 (supported: noaux_tc)");
    }
  } else {
    if (scoring != "softmax") {
      return KeyError(source, "scoring_func", "'" + scoring + "' is not supported for deepseek_v2 (supported: softmax)");
    }
    const std::string method = j.contains("topk_method") && j["topk_method"].is_string()
                                   ? j["topk_method"].get<std::string>()
                                   : std::string("greedy");
    if (method != "greedy" && method != "group_limited_greedy") {
      return KeyError(source, "topk_method",
                      "'" + method + "' is not supported for deepseek_v2 (supported: greedy, group_limited_greedy)");
    }
    m.group_limited = method == "group_limited_greedy";
    if (m.norm_topk_prob) {
      return KeyError(source, "norm_topk_prob",
                      "true is not supported for deepseek_v2 (transformers' DeepseekV2 router never renormalises)");
    }
  }
  if (v3 || m.group_limited) {
    if (m.num_experts % m.n_group != 0) {
      return KeyError(source, "n_group", std::to_string(m.n_group) + " does not divide n_routed_experts " +
                                             std::to_string(m.num_experts));
    }
    if (m.topk_group > m.n_group) {
      return KeyError(source, "topk_group", std::to_string(m.topk_group) + " exceeds n_group " + std::to_string(m.n_group));
    }
    if (v3 && m.num_experts / m.n_group < 2) {
      return KeyError(source, "n_group", "deepseek_v3 scores a group by its two best experts: each group needs >= 2");
    }
    if (m.topk_group * (m.num_experts / m.n_group) < m.num_experts_per_tok) {
      return KeyError(source, "topk_group", "the selected groups hold fewer experts than num_experts_per_tok");
    }
  }
  // Keys of DeepSeek's releases that would change results here.
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    return KeyError(source, "quantization_config",
                    "quantized (fp8) checkpoints are not supported: convert the weights to bf16 first");
  }
  int64_t ep_size = 1;
  RETURN_IF_ERROR(ReadInt(j, source, "ep_size", ep_size));  // DeepSeek's inference-time layout: no effect here
  return Status::Ok();
}

}  // namespace

bool ModelConfig::IsMoeLayer(int64_t layer) const {
  if (moe.num_experts <= 0) return false;
  if (moe.deepseek_moe) return layer >= moe.first_k_dense_replace;
  for (int64_t i : moe.mlp_only_layers) {
    if (i == layer) return false;
  }
  return (layer + 1) % moe.decoder_sparse_step == 0;
}

StatusOr<ModelConfig> ParseModelConfig(const json& j, const std::string& source) {
  if (!j.is_object()) return InvalidArgumentError(source + ": expected a JSON object");
  ModelConfig c;
  if (!j.contains("model_type") || !j["model_type"].is_string()) {
    return KeyError(source, "model_type", "missing (supported: " + std::string(kSupportedTypes) + ")");
  }
  c.model_type = j["model_type"].get<std::string>();
  if (c.model_type != "llama" && c.model_type != "qwen2" && c.model_type != "mistral" && !IsQwen3(c.model_type) &&
      !IsDeepseek(c.model_type)) {
    return KeyError(source, "model_type",
                    "unsupported model type '" + c.model_type + "' (supported: " + kSupportedTypes + ")");
  }
  if (c.model_type == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
    c.rms_norm_eps = 1e-6;
    c.tie_word_embeddings = false;
  }
  RETURN_IF_ERROR(ReadInt(j, source, "vocab_size", c.vocab_size));
  RETURN_IF_ERROR(ReadInt(j, source, "hidden_size", c.hidden_size));
  RETURN_IF_ERROR(ReadInt(j, source, "intermediate_size", c.intermediate_size));
  RETURN_IF_ERROR(ReadInt(j, source, "num_hidden_layers", c.num_hidden_layers));
  RETURN_IF_ERROR(ReadInt(j, source, "num_attention_heads", c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, source, "num_key_value_heads", c.num_key_value_heads));
  c.head_dim = c.hidden_size / c.num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, source, "head_dim", c.head_dim));
  RETURN_IF_ERROR(ReadDouble(j, source, "rms_norm_eps", c.rms_norm_eps));
  RETURN_IF_ERROR(ReadDouble(j, source, "rope_theta", c.rope_theta));
  RETURN_IF_ERROR(ReadInt(j, source, "max_position_embeddings", c.max_position_embeddings));
  RETURN_IF_ERROR(ReadBool(j, source, "tie_word_embeddings", c.tie_word_embeddings));
  RETURN_IF_ERROR(ReadDouble(j, source, "initializer_range", c.initializer_range));
  RETURN_IF_ERROR(ParseRopeScaling(j, source, c));
  if (c.model_type == "llama" || IsQwen3(c.model_type)) {
    // Qwen3's attention_bias adds biases to q, k, v and o as LLaMA's does.
    RETURN_IF_ERROR(ReadBool(j, source, "attention_bias", c.attention_bias));
    c.o_proj_bias = c.attention_bias;
  }
  if (IsQwen3(c.model_type)) {
    c.qk_norm = true;
    RETURN_IF_ERROR(ParseQwen3Window(j, source, c));
  }
  if (c.model_type == "qwen3_moe") RETURN_IF_ERROR(ParseMoe(j, source, c));
  if (IsDeepseek(c.model_type)) RETURN_IF_ERROR(ParseDeepseek(j, source, c));
  if (c.model_type == "llama") {
    RETURN_IF_ERROR(ReadBool(j, source, "mlp_bias", c.mlp_bias));
  }
  if (c.model_type == "mistral" && j.contains("sliding_window") && !j["sliding_window"].is_null()) {
    int64_t w = 0;
    RETURN_IF_ERROR(ReadInt(j, source, "sliding_window", w));
    c.sliding_window = w;
  }
  if (c.model_type == "qwen2") {
    bool use_sliding = false;
    RETURN_IF_ERROR(ReadBool(j, source, "use_sliding_window", use_sliding));
    if (use_sliding) {
      return KeyError(source, "use_sliding_window",
                      "Qwen2 per-layer sliding window attention is not implemented (supported: false)");
    }
  }
  if (j.contains("hidden_act") && j["hidden_act"].is_string()) c.hidden_act = j["hidden_act"].get<std::string>();
  if (c.hidden_act != "silu") {
    return KeyError(source, "hidden_act", "unsupported activation '" + c.hidden_act + "' (supported: silu)");
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"].get<std::string>();
  if (j.contains("dtype") && j["dtype"].is_string()) c.torch_dtype = j["dtype"].get<std::string>();
  if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16") {
    return KeyError(source, "torch_dtype",
                    "unsupported dtype '" + c.torch_dtype + "' (supported: float32, bfloat16, float16)");
  }
  RETURN_IF_ERROR(ReadTokenId(j, source, "bos_token_id", c.bos_token_id));
  RETURN_IF_ERROR(ReadTokenId(j, source, "eos_token_id", c.eos_token_id));
  RETURN_IF_ERROR(ReadTokenId(j, source, "pad_token_id", c.pad_token_id));

  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return KeyError(source, "num_key_value_heads",
                    std::to_string(c.num_key_value_heads) + " does not divide num_attention_heads " +
                        std::to_string(c.num_attention_heads));
  }
  if (c.head_dim % 2 != 0) return KeyError(source, "head_dim", "must be even for rotary embeddings");
  return c;
}

StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) return NotFoundError("model config not found: " + path + " (is this a Hugging Face model directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError(path + ": not valid JSON");
  return ParseModelConfig(j, path);
}

json ModelConfigToJson(const ModelConfig& c) {
  const char* arch = c.model_type == "qwen2"       ? "Qwen2ForCausalLM"
                     : c.model_type == "mistral"   ? "MistralForCausalLM"
                     : c.model_type == "qwen3"     ? "Qwen3ForCausalLM"
                     : c.model_type == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                     : c.model_type == "deepseek_v2" ? "DeepseekV2ForCausalLM"
                     : c.model_type == "deepseek_v3" ? "DeepseekV3ForCausalLM"
                                                   : "LlamaForCausalLM";
  json j = {
      {"architectures", {arch}},
      {"model_type", c.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"hidden_act", c.hidden_act},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"max_position_embeddings", c.max_position_embeddings},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"initializer_range", c.initializer_range},
      {"torch_dtype", c.torch_dtype},
      {"use_cache", true},
  };
  if (c.model_type == "llama") {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
    j["attention_dropout"] = 0.0;
  }
  if (c.model_type == "mistral") j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
  if (c.model_type == "qwen2") {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  }
  if (IsQwen3(c.model_type)) {
    j["attention_bias"] = c.attention_bias;
    j["attention_dropout"] = 0.0;
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  }
  if (c.model_type == "qwen3_moe") {
    const MoeConfig& m = c.moe;
    j["num_experts"] = m.num_experts;
    j["num_experts_per_tok"] = m.num_experts_per_tok;
    j["moe_intermediate_size"] = m.moe_intermediate_size;
    j["norm_topk_prob"] = m.norm_topk_prob;
    j["decoder_sparse_step"] = m.decoder_sparse_step;
    j["mlp_only_layers"] = m.mlp_only_layers;
    j["router_aux_loss_coef"] = m.router_aux_loss_coef;
    j["output_router_logits"] = m.output_router_logits;
  }
  if (IsDeepseek(c.model_type)) {
    const MlaConfig& a = c.mla;
    const MoeConfig& m = c.moe;
    j.erase("head_dim");  // HF derives it (qk_rope_head_dim)
    j["q_lora_rank"] = a.q_lora_rank > 0 ? json(a.q_lora_rank) : json(nullptr);
    j["kv_lora_rank"] = a.kv_lora_rank;
    j["qk_nope_head_dim"] = a.qk_nope_head_dim;
    j["qk_rope_head_dim"] = a.qk_rope_head_dim;
    j["v_head_dim"] = a.v_head_dim;
    j["attention_bias"] = c.attention_bias;
    j["attention_dropout"] = 0.0;
    j["n_routed_experts"] = m.num_experts;
    j["num_experts_per_tok"] = m.num_experts_per_tok;
    j["moe_intermediate_size"] = m.moe_intermediate_size;
    j["n_shared_experts"] = m.n_shared_experts;
    j["first_k_dense_replace"] = m.first_k_dense_replace;
    j["routed_scaling_factor"] = m.routed_scaling_factor;
    j["norm_topk_prob"] = m.norm_topk_prob;
    j["n_group"] = m.n_group;
    j["topk_group"] = m.topk_group;
    if (c.model_type == "deepseek_v2") {
      j["mlp_bias"] = c.mlp_bias;
      j["topk_method"] = m.group_limited ? "group_limited_greedy" : "greedy";
    } else {
      j["rope_interleave"] = a.rope_interleave;
    }
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  switch (c.rope_scaling.type) {
    case RopeScalingType::kNone: j["rope_scaling"] = nullptr; break;
    case RopeScalingType::kLinear: j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}}; break;
    case RopeScalingType::kDynamic: j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", c.rope_scaling.factor}}; break;
    case RopeScalingType::kLlama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", c.rope_scaling.factor},
                           {"low_freq_factor", c.rope_scaling.low_freq_factor},
                           {"high_freq_factor", c.rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
      break;
    case RopeScalingType::kYarn: {
      const RopeScaling& rs = c.rope_scaling;
      json r = {{"rope_type", "yarn"},
                {"factor", rs.factor},
                {"original_max_position_embeddings", rs.original_max_position_embeddings},
                {"beta_fast", rs.beta_fast},
                {"beta_slow", rs.beta_slow},
                {"truncate", rs.truncate}};
      if (rs.mscale != 0) r["mscale"] = rs.mscale;
      if (rs.attention_factor) r["attention_factor"] = *rs.attention_factor;
      if (rs.mscale_all_dim != 0) r["mscale_all_dim"] = rs.mscale_all_dim;
      j["rope_scaling"] = r;
      break;
    }
  }
  return j;
}

}  // namespace anneal::model
