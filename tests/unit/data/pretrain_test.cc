// Stage pt examples against hand-checked expectations of LLaMA-Factory's PretrainDatasetProcessor (v0.9.5) run
// through datasets.map(batched=True, batch_size, num_proc): blocks per map batch and shard, the remainder of
// each group dropped, labels -100 on the pad token.
#include "trainer/data/pretrain.h"

#include <gtest/gtest.h>

#include "tests/unit/data/test_dir.h"
#include "trainer/data/pipeline.h"

namespace anneal::data {
namespace {

std::vector<std::vector<int32_t>> Ids(std::initializer_list<std::vector<int32_t>> rows) {
  return rows;
}

std::vector<std::vector<int32_t>> Inputs(const std::vector<SftExample>& examples) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& ex : examples) out.push_back(ex.input_ids);
  return out;
}

TEST(Pretrain, PackingConcatenatesAndCutsBlocksDroppingTheRemainder) {
  PretrainOptions o;
  o.cutoff_len = 3;
  // 2 + 3 + 4 = 9 tokens: three blocks, nothing left over.
  auto blocks = GroupPretrainTexts(Ids({{1, 2}, {3, 4, 5}, {6, 7, 8, 9}}), o);
  EXPECT_EQ(Inputs(blocks), Ids({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}));
  // 10 tokens: the last one is dropped.
  blocks = GroupPretrainTexts(Ids({{1, 2}, {3, 4, 5}, {6, 7, 8, 9, 10}}), o);
  EXPECT_EQ(Inputs(blocks), Ids({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}));
  EXPECT_EQ(blocks[0].labels, blocks[0].input_ids);
}

TEST(Pretrain, EachMapBatchIsGroupedOnItsOwn) {
  PretrainOptions o;
  o.cutoff_len = 3;
  o.batch_size = 2;  // rows {0, 1} and {2, 3}: 5 tokens each, one block each, two tokens dropped per batch
  auto blocks = GroupPretrainTexts(Ids({{1, 2}, {3, 4, 5}, {6, 7}, {8, 9, 10}}), o);
  EXPECT_EQ(Inputs(blocks), Ids({{1, 2, 3}, {6, 7, 8}}));
}

TEST(Pretrain, ShardsAreContiguousAndGroupedSeparately) {
  using Range = std::pair<int64_t, int64_t>;
  EXPECT_EQ(ContiguousShard(10, 3, 0), Range(0, 4));
  EXPECT_EQ(ContiguousShard(10, 3, 1), Range(4, 7));
  EXPECT_EQ(ContiguousShard(10, 3, 2), Range(7, 10));
  PretrainOptions o;
  o.cutoff_len = 2;
  o.num_shards = 2;  // rows {0, 1} and {2}: [1 2 3] -> [1 2], [4 5 6] -> [4 5]
  auto blocks = GroupPretrainTexts(Ids({{1, 2}, {3}, {4, 5, 6}}), o);
  EXPECT_EQ(Inputs(blocks), Ids({{1, 2}, {4, 5}}));
  o.num_shards = 8;  // more workers than rows: one shard per row
  blocks = GroupPretrainTexts(Ids({{1, 2}, {3}, {4, 5, 6}}), o);
  EXPECT_EQ(Inputs(blocks), Ids({{1, 2}, {4, 5}}));
}

TEST(Pretrain, ThePadTokenIsNotALabel) {
  PretrainOptions o;
  o.cutoff_len = 3;
  o.pad_id = 9;  // pad == eos in LLaMA-Factory when the tokenizer has no pad token
  auto blocks = GroupPretrainTexts(Ids({{1, 2, 9}, {3, 4, 9}}), o);
  EXPECT_EQ(Inputs(blocks), Ids({{1, 2, 9}, {3, 4, 9}}));
  EXPECT_EQ(blocks[0].labels, (std::vector<int32_t>{1, 2, kIgnoreIndex}));
}

TEST(Pretrain, WithoutPackingEachTextIsCutToCutoffLen) {
  PretrainOptions o;
  o.cutoff_len = 3;
  o.packing = false;
  auto examples = GroupPretrainTexts(Ids({{1, 2, 3, 4}, {5}}), o);
  EXPECT_EQ(Inputs(examples), Ids({{1, 2, 3}, {5}}));
}

// A byte-level tokenizer: one token per byte, <s> = 256, </s> = 257.
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

TEST(Pretrain, PipelineReadsTheTextColumnWithoutTemplateAndCachesBlocks) {
  testing::TempDir d;
  d.Write("tokenizer.json", ByteTokenizerJson());
  d.Write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<s>"})");
  d.Write("c4.jsonl", "{\"text\": \"abc\"}\n{\"text\": \"de\"}\n{\"text\": \"fghij\"}\n");
  d.Write("dataset_info.json", R"({"c4_demo": {"file_name": "c4.jsonl", "columns": {"prompt": "text"}}})");
  DataConfig c;
  c.tokenizer_dir = d.path();
  c.template_name = "default";
  c.datasets = {"c4_demo"};
  c.dataset_dir = d.path();
  c.cache_dir = d.path() + "/cache";
  c.pretrain = true;
  c.sft.cutoff_len = 4;
  auto data = PrepareSftData(c);
  ASSERT_TRUE(data.ok()) << data.status().message();
  // "abc</s>de</s>fghij</s>" = 13 tokens: three blocks of 4, the last </s> dropped; no "Human:" template text.
  ASSERT_EQ(data->cache->size(), 3);
  auto ids = data->cache->input_ids(0);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.end()), (std::vector<int32_t>{'a', 'b', 'c', 257}));
  ids = data->cache->input_ids(2);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.end()), (std::vector<int32_t>{'g', 'h', 'i', 'j'}));
  auto labels = data->cache->labels(0);
  EXPECT_EQ(std::vector<int32_t>(labels.begin(), labels.end()), (std::vector<int32_t>{'a', 'b', 'c', 257}));

  c.pretrain_packing = false;  // one cut text per row, a different cache
  auto unpacked = PrepareSftData(c);
  ASSERT_TRUE(unpacked.ok()) << unpacked.status().message();
  EXPECT_NE(unpacked->cache_key, data->cache_key);
  ASSERT_EQ(unpacked->cache->size(), 3);
  EXPECT_EQ(unpacked->cache->input_ids(1).size(), 3u);  // "de</s>"
  EXPECT_EQ(unpacked->cache->input_ids(2).size(), 4u);  // "fghij</s>" cut to 4
}

}  // namespace
}  // namespace anneal::data
