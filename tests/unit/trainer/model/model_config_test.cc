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
            "config.json: key 'model_type': unsupported model type 'gpt2' (supported: llama, qwen2, mistral)");
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

}  // namespace
}  // namespace anneal::model
