// ModelConfig parsing: supported variants and clear errors for the rest.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "trainer/model/config.h"

namespace anneal::model {
namespace {

using json = nlohmann::json;

json Base() {
  return {{"model_type", "llama"},  {"vocab_size", 100},        {"hidden_size", 64},       {"intermediate_size", 128},
          {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}};
}

std::string ErrorOf(const json& j) {
  auto c = ParseModelConfig(j, "config.json");
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : c.status().message();
}

TEST(ModelConfig, ParsesLlamaWithDefaults) {
  auto c = ParseModelConfig(Base(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
}

TEST(ModelConfig, Qwen2HasQkvBiases) {
  json j = Base();
  j["model_type"] = "qwen2";
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
}

TEST(ModelConfig, Llama3RopeScalingAndExplicitHeadDim) {
  json j = Base();
  j["head_dim"] = 24;
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", 8192}};
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->head_dim, 24);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
}

TEST(ModelConfig, EosTokenListTakesTheFirst) {
  json j = Base();
  j["eos_token_id"] = {128001, 128009};
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c->eos_token_id, 128001);
}

TEST(ModelConfig, UnknownModelTypeListsTheSupportedOnes) {
  json j = Base();
  j["model_type"] = "gpt2";
  EXPECT_EQ(ErrorOf(j),
            "config.json: key 'model_type': unsupported model type 'gpt2' (supported: llama, qwen2, mistral, "
            "qwen3, qwen3_moe, deepseek_v2, deepseek_v3)");
}

TEST(ModelConfig, UnsupportedRopeScalingIsNamed) {
  json j = Base();
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4.0}};
  EXPECT_EQ(ErrorOf(j),
            "config.json: key 'rope_scaling.rope_type': unsupported rope scaling 'longrope' (supported: "
            "default, linear, dynamic, llama3, yarn)");
}

TEST(ModelConfig, KvHeadsMustDivideHeads) {
  json j = Base();
  j["num_key_value_heads"] = 3;
  EXPECT_EQ(ErrorOf(j), "config.json: key 'num_key_value_heads': 3 does not divide num_attention_heads 4");
}

TEST(ModelConfig, WrongTypesAreNamed) {
  json j = Base();
  j["hidden_size"] = "big";
  EXPECT_EQ(ErrorOf(j), "config.json: key 'hidden_size': expected an integer, got \"big\"");
  j = Base();
  j["num_hidden_layers"] = 0;
  EXPECT_EQ(ErrorOf(j), "config.json: key 'num_hidden_layers': must be positive, got 0");
}

TEST(ModelConfig, Qwen2SlidingWindowIsRefused) {
  json j = Base();
  j["model_type"] = "qwen2";
  j["use_sliding_window"] = true;
  EXPECT_NE(ErrorOf(j).find("use_sliding_window"), std::string::npos);
}

TEST(ModelConfig, JsonRoundTrip) {
  json j = Base();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  j["tie_word_embeddings"] = true;
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok());
  auto back = ParseModelConfig(ModelConfigToJson(*c), "again");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_TRUE(back->tie_word_embeddings);
  EXPECT_EQ(back->hidden_size, 64);
}

TEST(ModelConfig, Qwen3HasQkNormAndExplicitHeadDim) {
  json j = Base();
  j["model_type"] = "qwen3";
  j["head_dim"] = 24;  // not hidden / heads
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->qk_norm);
  EXPECT_EQ(c->head_dim, 24);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->moe.num_experts, 0);
  EXPECT_FALSE(c->IsMoeLayer(0));
}

TEST(ModelConfig, Qwen3SlidingWindowIsRefusedByNameUnlessItCoversNoLayer) {
  json j = Base();
  j["model_type"] = "qwen3";
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 1;  // layer 1 would slide
  EXPECT_NE(ErrorOf(j).find("use_sliding_window"), std::string::npos);
  j["max_window_layers"] = 2;  // no layer slides: the same as full attention
  EXPECT_TRUE(ParseModelConfig(j, "config.json").ok());
  j.erase("use_sliding_window");
  j["layer_types"] = {"full_attention", "sliding_attention"};
  std::string error = ErrorOf(j);
  EXPECT_NE(error.find("layer_types"), std::string::npos) << error;
  EXPECT_NE(error.find("sliding_attention"), std::string::npos) << error;
}

TEST(ModelConfig, Qwen3MoeSparseLayers) {
  json j = Base();
  j["model_type"] = "qwen3_moe";
  j["num_hidden_layers"] = 4;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 32;
  j["norm_topk_prob"] = true;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->qk_norm);
  EXPECT_EQ(c->moe.num_experts, 8);
  EXPECT_TRUE(c->moe.norm_topk_prob);
  // (i + 1) % 2 == 0 and not listed: only layer 1 (layer 3 is mlp-only).
  EXPECT_FALSE(c->IsMoeLayer(0));
  EXPECT_TRUE(c->IsMoeLayer(1));
  EXPECT_FALSE(c->IsMoeLayer(2));
  EXPECT_FALSE(c->IsMoeLayer(3));
  auto back = ParseModelConfig(ModelConfigToJson(*c), "again");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->moe.num_experts, 8);
  EXPECT_EQ(back->moe.moe_intermediate_size, 32);
  EXPECT_EQ(back->moe.mlp_only_layers, std::vector<int64_t>{3});
  EXPECT_TRUE(back->IsMoeLayer(1));
}

TEST(ModelConfig, Qwen3MoeBadExpertKeysAreNamed) {
  json j = Base();
  j["model_type"] = "qwen3_moe";
  j["num_experts"] = 4;
  j["num_experts_per_tok"] = 5;
  EXPECT_NE(ErrorOf(j).find("num_experts_per_tok"), std::string::npos);
  j["num_experts_per_tok"] = 2;
  j["mlp_only_layers"] = {7};
  EXPECT_NE(ErrorOf(j).find("mlp_only_layers"), std::string::npos);
  j["mlp_only_layers"] = {0};
  j["use_sliding_window"] = true;
  EXPECT_NE(ErrorOf(j).find("use_sliding_window"), std::string::npos);
}

// DeepSeek-V2-Lite's config.json as released (the keys DeepSeek's own code reads included).
json DeepseekV2Lite() {
  return json::parse(R"({
    "model_type": "deepseek_v2", "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944,
    "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 163840,
    "aux_loss_alpha": 0.001, "ep_size": 1, "first_k_dense_replace": 1, "hidden_act": "silu", "kv_lora_rank": 512,
    "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2,
    "norm_topk_prob": false, "num_experts_per_tok": 6, "pretraining_tp": 1, "q_lora_rank": null,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": true,
    "tie_word_embeddings": false, "topk_group": 1, "topk_method": "greedy", "torch_dtype": "bfloat16",
    "v_head_dim": 128, "bos_token_id": 100000, "eos_token_id": 100001})");
}

TEST(ModelConfig, DeepseekV2LiteAsReleased) {
  auto c = ParseModelConfig(DeepseekV2Lite(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->mla.enabled);
  EXPECT_EQ(c->mla.q_lora_rank, 0);  // null: a plain q_proj
  EXPECT_EQ(c->mla.kv_lora_rank, 512);
  EXPECT_EQ(c->head_dim, 64);  // the rotary part, as HF sets it
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 40);
  EXPECT_DOUBLE_EQ(c->rope_scaling.mscale_all_dim, 0.707);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_TRUE(c->moe.deepseek_moe);
  EXPECT_FALSE(c->moe.sigmoid_scoring);
  EXPECT_FALSE(c->moe.group_limited);
  EXPECT_EQ(c->moe.num_experts, 64);
  EXPECT_EQ(c->moe.num_experts_per_tok, 6);
  EXPECT_EQ(c->moe.n_shared_experts, 2);
  EXPECT_FALSE(c->IsMoeLayer(0));
  EXPECT_TRUE(c->IsMoeLayer(1));
  EXPECT_TRUE(c->IsMoeLayer(26));
  auto back = ParseModelConfig(ModelConfigToJson(*c), "again");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->mla.q_lora_rank, 0);
  EXPECT_EQ(back->head_dim, 64);
  EXPECT_EQ(back->rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_DOUBLE_EQ(back->rope_scaling.mscale, 0.707);
  EXPECT_EQ(back->moe.first_k_dense_replace, 1);
}

TEST(ModelConfig, DeepseekV3Routing) {
  json j = DeepseekV2Lite();
  j["model_type"] = "deepseek_v3";
  j["q_lora_rank"] = 1536;
  j["n_routed_experts"] = 256;
  j["num_experts_per_tok"] = 8;
  j["n_group"] = 8;
  j["topk_group"] = 4;
  j["first_k_dense_replace"] = 3;
  j["norm_topk_prob"] = true;
  j["routed_scaling_factor"] = 2.5;
  j["scoring_func"] = "sigmoid";
  j["topk_method"] = "noaux_tc";
  j["num_nextn_predict_layers"] = 1;
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->mla.q_lora_rank, 1536);
  EXPECT_TRUE(c->mla.rope_interleave);
  EXPECT_TRUE(c->moe.sigmoid_scoring);
  EXPECT_TRUE(c->moe.norm_topk_prob);
  EXPECT_EQ(c->moe.n_group, 8);
  EXPECT_FALSE(c->IsMoeLayer(2));
  EXPECT_TRUE(c->IsMoeLayer(3));
  j["rope_interleave"] = false;
  c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->mla.rope_interleave);
}

TEST(ModelConfig, DeepseekKeysThatWouldChangeResultsAreRefusedByName) {
  auto error_with = [](const char* key, const json& value, const char* type = "deepseek_v2") {
    json j = DeepseekV2Lite();
    j["model_type"] = type;
    if (std::string(type) == "deepseek_v3") j["scoring_func"] = "sigmoid";
    j[key] = value;
    return ErrorOf(j);
  };
  EXPECT_NE(error_with("moe_layer_freq", 2).find("'moe_layer_freq'"), std::string::npos);
  EXPECT_NE(error_with("scoring_func", "sigmoid").find("'scoring_func'"), std::string::npos);
  EXPECT_NE(error_with("scoring_func", "softmax", "deepseek_v3").find("'scoring_func'"), std::string::npos);
  EXPECT_NE(error_with("topk_method", "noaux_tc").find("'topk_method'"), std::string::npos);
  EXPECT_NE(error_with("norm_topk_prob", true).find("'norm_topk_prob'"), std::string::npos);
  EXPECT_NE(error_with("num_key_value_heads", 8).find("'num_key_value_heads'"), std::string::npos);
  EXPECT_NE(error_with("attention_dropout", 0.1).find("'attention_dropout'"), std::string::npos);
  EXPECT_NE(error_with("quantization_config", json{{"quant_method", "fp8"}}).find("'quantization_config'"),
            std::string::npos);
  EXPECT_NE(error_with("num_experts_per_tok", 65).find("'num_experts_per_tok'"), std::string::npos);
  json grouped = DeepseekV2Lite();
  grouped["topk_method"] = "group_limited_greedy";
  grouped["n_group"] = 5;  // does not divide 64 experts
  EXPECT_NE(ErrorOf(grouped).find("'n_group'"), std::string::npos);
  grouped["n_group"] = 8;
  grouped["topk_group"] = 9;
  EXPECT_NE(ErrorOf(grouped).find("'topk_group'"), std::string::npos);
}

TEST(ModelConfig, YarnForLlama) {
  json j = Base();
  j["max_position_embeddings"] = 32768;
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_fast, 32);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_slow, 1);
  EXPECT_FALSE(c->rope_scaling.attention_factor.has_value());
  j["rope_scaling"].erase("factor");  // derived from the context extension, as transformers does
  c = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  j["rope_scaling"]["partial_rotary_factor"] = 0.5;
  EXPECT_NE(ErrorOf(j).find("partial_rotary_factor"), std::string::npos);
}

}  // namespace
}  // namespace anneal::model
