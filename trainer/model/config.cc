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
  if (type == "linear") {
    c.rope_scaling.type = RopeScalingType::kLinear;
  } else if (type == "dynamic") {
    c.rope_scaling.type = RopeScalingType::kDynamic;
  } else if (type == "llama3") {
    c.rope_scaling.type = RopeScalingType::kLlama3;
    c.rope_scaling.low_freq_factor = r.value("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = r.value("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings = r.value("original_max_position_embeddings", int64_t{8192});
  } else {
    return KeyError(source, std::string(key) + ".rope_type",
                    "unsupported rope scaling '" + type + "' (supported: default, linear, dynamic, llama3)");
  }
  if (!r.contains("factor") || !r["factor"].is_number() || r["factor"].get<double>() <= 0) {
    return KeyError(source, std::string(key) + ".factor", "a positive number is required for " + type + " scaling");
  }
  c.rope_scaling.factor = r["factor"].get<double>();
  return Status::Ok();
}

constexpr const char* kSupportedTypes = "llama, qwen2, mistral, qwen3, qwen3_moe";

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

}  // namespace

bool ModelConfig::IsMoeLayer(int64_t layer) const {
  if (moe.num_experts <= 0) return false;
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
  if (c.model_type != "llama" && c.model_type != "qwen2" && c.model_type != "mistral" && !IsQwen3(c.model_type)) {
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
  }
  return j;
}

}  // namespace anneal::model
