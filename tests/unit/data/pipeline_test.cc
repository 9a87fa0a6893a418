#include "trainer/data/pipeline.h"

#include <gtest/gtest.h>

#include "tests/unit/data/test_dir.h"

namespace anneal::data {
namespace {

using testing::TempDir;

// A byte-level tokenizer whose vocab is the 256 byte chars (one token per byte), plus two specials.
std::string ByteTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& alpha = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) vocab[alpha[b]] = b;
  nlohmann::json j = {
      {"added_tokens", {{{"id", 256}, {"content", "<s>"}, {"special", true}},
                        {{"id", 257}, {"content", "</s>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  return j.dump();
}

TEST(Pipeline, TokenizesOnceIntoTheCacheAndSplits) {
  TempDir d;
  d.Write("tokenizer.json", ByteTokenizerJson());
  d.Write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  std::string rows;
  for (int i = 0; i < 20; ++i) rows += "{\"instruction\": \"q" + std::to_string(i) + "\", \"output\": \"a\"}\n";
  d.Write("d.jsonl", rows);
  DataConfig c;
  c.tokenizer_dir = d.path();
  c.template_name = "default";
  c.datasets = {"d.jsonl"};
  c.dataset_dir = d.path();
  c.val_size = 0.25;
  c.cache_dir = d.path() + "/cache";
  int64_t last_done = 0;
  auto progress = [&](std::string_view stage, int64_t done, int64_t) {
    if (stage == "tokenize") last_done = done;
  };
  auto first = PrepareSftData(c, progress);
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_TRUE(first->cache->built_here());
  EXPECT_EQ(last_done, 20);
  EXPECT_EQ(first->cache->size(), 20);
  EXPECT_EQ(first->val.size(), 5u);
  EXPECT_EQ(first->train.size(), 15u);
  // "Human: q0</s>\nAssistant:" is prompt (masked); "a</s>\n" is trained.
  auto labels = first->cache->labels(0);
  auto ids = first->cache->input_ids(0);
  std::string prompt = "Human: q0";
  for (size_t k = 0; k < prompt.size(); ++k) EXPECT_EQ(labels[k], kIgnoreIndex);
  EXPECT_EQ(ids[prompt.size()], 257);  // eos slot
  EXPECT_EQ(labels[labels.size() - 3], 'a');
  EXPECT_EQ(labels[labels.size() - 2], 257);

  auto second = PrepareSftData(c, progress);  // another rank / a restarted attempt
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->cache->built_here());
  EXPECT_EQ(second->cache_key, first->cache_key);
  EXPECT_EQ(second->val, first->val);

  c.sft.cutoff_len = 8;  // an option that changes tokens changes the key
  auto third = PrepareSftData(c, progress);
  ASSERT_TRUE(third.ok());
  EXPECT_NE(third->cache_key, first->cache_key);
  EXPECT_LE(third->cache->input_ids(0).size(), 8u);
}

}  // namespace
}  // namespace anneal::data
