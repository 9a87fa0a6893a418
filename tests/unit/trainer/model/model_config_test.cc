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
            "qwen3, qwen3_moe)");
}

TEST(ModelConfig, UnsupportedRopeScalingIsNamed) {
  json j = Base();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_EQ(ErrorOf(j),
            "config.json: key 'rope_scaling.rope_type': unsupported rope scaling 'yarn' (supported: "
            "default, linear, dynamic, llama3)");
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

}  // namespace
}  // namespace anneal::model
