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
      {"added_tokens",
       {{{"id", 256}, {"content", "<s>"}, {"special", true}}, {{"id", 257}, {"content", "</s>"}, {"special", true}}}},
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

// Mixing reaches the cache: interleave_under with probabilities takes the rows HF datasets would, a new
// strategy or seed is a new cache, and a csv file gives the same tokens as its jsonl twin.
TEST(Pipeline, MixStrategyAndFileTypesReachTheCache) {
  TempDir d;
  d.Write("tokenizer.json", ByteTokenizerJson());
  d.Write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  std::string a, b, csv = "instruction,output\n";
  for (int i = 0; i < 6; ++i) a += "{\"instruction\": \"a" + std::to_string(i) + "\", \"output\": \"x\"}\n";
  for (int i = 0; i < 3; ++i) {
    b += "{\"instruction\": \"b" + std::to_string(i) + "\", \"output\": \"y\"}\n";
    csv += "b" + std::to_string(i) + ",y\n";
  }
  d.Write("a.jsonl", a);
  d.Write("b.jsonl", b);
  d.Write("b.csv", csv);
  DataConfig c;
  c.tokenizer_dir = d.path();
  c.datasets = {"a.jsonl", "b.jsonl"};
  c.dataset_dir = d.path();
  c.cache_dir = d.path() + "/cache";
  auto concat = PrepareSftData(c);
  ASSERT_TRUE(concat.ok()) << concat.status().message();
  EXPECT_EQ(concat->cache->size(), 9);
  c.mix_strategy = "interleave_under";  // round-robin: a0 b0 a1 b1 a2 b2
  auto under = PrepareSftData(c);
  ASSERT_TRUE(under.ok()) << under.status().message();
  EXPECT_NE(under->cache_key, concat->cache_key);
  ASSERT_EQ(under->cache->size(), 6);
  auto first_char = [](const PreparedData& p, int64_t row) {
    auto ids = p.cache->input_ids(row);
    return std::string{static_cast<char>(ids[7]), static_cast<char>(ids[8])};  // after "Human: "
  };
  EXPECT_EQ(first_char(*under, 1), "b0");
  EXPECT_EQ(first_char(*under, 2), "a1");
  c.datasets = {"a.jsonl", "b.csv"};
  auto csv_under = PrepareSftData(c);
  ASSERT_TRUE(csv_under.ok()) << csv_under.status().message();
  for (int64_t r = 0; r < 6; ++r) {
    auto x = under->cache->input_ids(r), y = csv_under->cache->input_ids(r);
    EXPECT_EQ(std::vector<int32_t>(x.begin(), x.end()), std::vector<int32_t>(y.begin(), y.end())) << r;
  }
  c.interleave_probs = {0.5, 0.5};
  auto seeded = PrepareSftData(c);
  ASSERT_TRUE(seeded.ok()) << seeded.status().message();
  c.seed = 7;
  auto reseeded = PrepareSftData(c);
  ASSERT_TRUE(reseeded.ok());
  EXPECT_NE(seeded->cache_key, reseeded->cache_key);  // the seed picks the rows now
}

}  // namespace
}  // namespace anneal::data
