#include "trainer/data/pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <span>

#include "tests/unit/data/test_dir.h"
#include "trainer/data/feedback.h"

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

// ---- preference pairs (stage dpo): ranking rows -> two cache rows each (trainer/data/pairwise.h) ----

DataConfig PairConfig(const TempDir& d, const std::vector<std::string>& datasets) {
  d.Write("tokenizer.json", ByteTokenizerJson());
  d.Write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  d.Write("pairs.json", R"([
    {"instruction": "Name a color", "input": "", "chosen": "blue", "rejected": "a long wrong answer"},
    {"instruction": "Add", "input": "2 and 3", "chosen": "5", "rejected": "7"}])");
  d.Write("chat.json", R"([{"conversations": [{"from": "system", "value": "terse"}, {"from": "human", "value": "hi"},
    {"from": "gpt", "value": "hello"}, {"from": "human", "value": "capital?"}],
    "chosen": {"from": "gpt", "value": "Paris"}, "rejected": {"from": "gpt", "value": "Lyon"}}])");
  d.Write("plain.json", R"([{"instruction": "q", "output": "a"}])");
  d.Write("dataset_info.json", R"({
    "pairs": {"file_name": "pairs.json", "ranking": true,
              "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
    "chat": {"file_name": "chat.json", "formatting": "sharegpt", "ranking": true,
             "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "plain": {"file_name": "plain.json"}})");
  DataConfig c;
  c.tokenizer_dir = d.path();
  c.template_name = "default";
  c.datasets = datasets;
  c.dataset_dir = d.path();
  c.cache_dir = d.path() + "/cache";
  c.pairwise = true;
  return c;
}

// The trained (label) bytes of a cache row, as text (the byte tokenizer's ids are the bytes; specials dropped).
std::string LabelText(const TokenCache& cache, int64_t row) {
  std::string text;
  for (int32_t id : cache.labels(row)) {
    if (id >= 0 && id < 256) text += static_cast<char>(id);
  }
  return text;
}

// Bounded memory (stream.h): chunks of 5 conversations give the cache loading everything first gives; stages and
// datasets the stream cannot take fall back (PreparedData::streamed says which path built it).
TEST(Pipeline, BoundedMemoryBuildWritesTheInMemoryCache) {
  TempDir d;
  d.Write("tokenizer.json", ByteTokenizerJson());
  d.Write("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  std::string a;
  for (int i = 0; i < 23; ++i)
    a += i == 9 ? "{\"instruction\": 1}\n" : "{\"instruction\": \"a" + std::to_string(i) + "\", \"output\": \"x\"}\n";
  d.Write("a.jsonl", a);
  d.Write("dataset_info.json", R"({"half": {"file_name": "a.jsonl", "split": "train[:50%]"}})");
  for (const char* dataset : {"a.jsonl", "half"}) {
    DataConfig c;
    c.tokenizer_dir = d.path();
    c.datasets = {dataset};
    c.dataset_dir = d.path();
    c.skip_bad_rows = true;
    c.stream_chunk_rows = 5;
    c.cache_dir = d.path() + "/streamed";
    auto streamed = PrepareSftData(c);
    c.bounded_memory = false;
    c.cache_dir = d.path() + "/whole";
    auto whole = PrepareSftData(c);
    ASSERT_TRUE(streamed.ok() && whole.ok()) << streamed.status().message() << whole.status().message();
    EXPECT_EQ(streamed->streamed, std::string(dataset) == "a.jsonl") << dataset;
    EXPECT_FALSE(whole->streamed);
    EXPECT_EQ(streamed->report.skipped, 1);
    ASSERT_EQ(streamed->cache->size(), whole->cache->size());
    EXPECT_EQ(streamed->cache->size(), std::string(dataset) == "a.jsonl" ? 22 : 11);
    for (int64_t i = 0; i < whole->cache->size(); ++i) {
      auto x = streamed->cache->input_ids(i), y = whole->cache->input_ids(i);
      ASSERT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << dataset << " row " << i;
      auto lx = streamed->cache->labels(i), ly = whole->cache->labels(i);
      ASSERT_TRUE(std::equal(lx.begin(), lx.end(), ly.begin(), ly.end())) << dataset << " row " << i;
    }
    EXPECT_EQ(streamed->train, whole->train);
    EXPECT_EQ(streamed->val, whole->val);
  }
}

TEST(PairwiseData, RankingRowsBecomeAdjacentChosenAndRejectedRowsWithOnePrompt) {
  TempDir d;
  auto data = PrepareSftData(PairConfig(d, {"pairs", "chat"}));
  ASSERT_TRUE(data.ok()) << data.status().message();
  ASSERT_TRUE(data->pairwise);
  ASSERT_EQ(data->cache->size(), 6);                        // three pairs
  EXPECT_EQ(data->train, (std::vector<int64_t>{0, 2, 4}));  // the chosen rows
  const std::vector<std::pair<std::string, std::string>> answers = {
      {"blue", "a long wrong answer"}, {"5", "7"}, {"Paris", "Lyon"}};
  for (int64_t pair = 0; pair < 3; ++pair) {
    const int64_t chosen = 2 * pair, rejected = chosen + 1;
    EXPECT_EQ(LabelText(*data->cache, chosen).rfind(answers[pair].first, 0), 0u) << LabelText(*data->cache, chosen);
    EXPECT_EQ(LabelText(*data->cache, rejected).rfind(answers[pair].second, 0), 0u);
    // The same prompt tokens, masked in both.
    auto ci = data->cache->input_ids(chosen), ri = data->cache->input_ids(rejected);
    auto cl = data->cache->labels(chosen);
    size_t prompt = 0;
    while (prompt < cl.size() && cl[prompt] == kIgnoreIndex) ++prompt;
    ASSERT_GT(prompt, 0u);
    EXPECT_TRUE(std::equal(ci.begin(), ci.begin() + static_cast<int64_t>(prompt), ri.begin()));
    EXPECT_EQ(data->cache->labels(rejected)[prompt - 1], kIgnoreIndex);
    EXPECT_NE(data->cache->labels(rejected)[prompt], kIgnoreIndex);
  }
  // The sharegpt prompt carries its system text and history.
  std::string prompt_text;
  for (int32_t id : data->cache->input_ids(4)) {
    if (id < 256) prompt_text += static_cast<char>(id);
  }
  EXPECT_NE(prompt_text.find("terse"), std::string::npos) << prompt_text;
  EXPECT_NE(prompt_text.find("hello"), std::string::npos) << prompt_text;
}

TEST(PairwiseData, CutoffCutsThePromptOnceAndBothAnswersToTheLongerOnesShare) {
  TempDir d;
  DataConfig c = PairConfig(d, {"pairs"});
  c.sft.cutoff_len = 16;
  auto data = PrepareSftData(c);
  ASSERT_TRUE(data.ok()) << data.status().message();
  // Pair 0: "Human: Name a color..." and an answer of 20+ bytes: infer_seqlen shares 16 tokens.
  auto chosen = data->cache->input_ids(0), rejected = data->cache->input_ids(1);
  EXPECT_LE(rejected.size(), 16u);
  auto cl = data->cache->labels(0), rl = data->cache->labels(1);
  const auto masked = [](std::span<const int32_t> labels) {
    return std::count(labels.begin(), labels.end(), kIgnoreIndex);
  };
  EXPECT_EQ(masked(cl), masked(rl)) << "the prompt is cut once for both answers";
  EXPECT_EQ(std::vector<int32_t>(chosen.begin(), chosen.begin() + masked(cl)),
            std::vector<int32_t>(rejected.begin(), rejected.begin() + masked(rl)));
}

TEST(PairwiseData, StageAndDatasetMustAgreeAndBadRowsAreNamed) {
  TempDir d;
  auto plain = PrepareSftData(PairConfig(d, {"plain"}));
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("is not a ranking dataset"), std::string::npos) << plain.status().message();
  DataConfig sft = PairConfig(d, {"pairs"});
  sft.pairwise = false;
  auto ranked = PrepareSftData(sft);
  ASSERT_FALSE(ranked.ok());
  EXPECT_NE(ranked.status().message().find("holds preference pairs"), std::string::npos);

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"([{"instruction": "q", "chosen": "a"}])", "field 'rejected': missing"},
      {R"([{"instruction": "q", "chosen": "a", "rejected": 3}])", "field 'rejected': must be a string"},
  };
  for (const auto& [rows, want] : bad) {
    DataConfig c = PairConfig(d, {"pairs"});
    d.Write("pairs.json", rows);  // over the good rows PairConfig wrote
    auto r = PrepareSftData(c);
    ASSERT_FALSE(r.ok()) << rows;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("pairs.json"), std::string::npos) << "names the file";
  }
  const std::vector<std::pair<std::string, std::string>> bad_chat = {
      {R"([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
           "chosen": {"from": "gpt", "value": "x"}, "rejected": {"from": "gpt", "value": "y"}}])",
       "must end with a user turn"},
      {R"([{"conversations": [{"from": "human", "value": "q"}],
           "chosen": {"from": "human", "value": "x"}, "rejected": {"from": "gpt", "value": "y"}}])",
       "role 'human' is invalid for an answer"},
      {R"([{"conversations": [{"from": "human", "value": "q"}], "chosen": "x", "rejected": {"from": "gpt", "value": "y"}}])",
       "the chosen answer must be a message"},
  };
  for (const auto& [rows, want] : bad_chat) {
    DataConfig c = PairConfig(d, {"chat"});
    d.Write("chat.json", rows);
    auto r = PrepareSftData(c);
    ASSERT_FALSE(r.ok()) << rows;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
  }
}

// ---- tagged answers (stage kto): kto_tag rows -> target, KL and tag rows (trainer/data/feedback.h) ----

DataConfig KtoConfig(const TempDir& d) {
  DataConfig c = PairConfig(d, {"kto"});
  d.Write("kto.json", R"([
    {"instruction": "q0", "output": "a0", "tag": true},
    {"instruction": "q1", "output": "a1", "tag": false},
    {"instruction": "q2", "output": "a2", "tag": true}])");
  d.Write("kto_chat.json", R"([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant",
    "content": "yo"}], "label": false}])");
  d.Write("dataset_info.json", R"({
    "kto": {"file_name": "kto.json", "columns": {"prompt": "instruction", "response": "output", "kto_tag": "tag"}},
    "kto_chat": {"file_name": "kto_chat.json", "formatting": "sharegpt",
                 "columns": {"messages": "messages", "kto_tag": "label"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
    "plain": {"file_name": "plain.json"}})");
  c.pairwise = false;
  c.kto = true;
  return c;
}

std::string InputText(const TokenCache& cache, int64_t row) {
  std::string text;
  for (int32_t id : cache.input_ids(row)) {
    if (id >= 0 && id < 256) text += static_cast<char>(id);
  }
  return text;
}

TEST(KtoData, KlPartnersRotateByOneWithinEachMapBatchOfEachShard) {
  EXPECT_EQ(KlPartners(4, 1000, 1), (std::vector<int64_t>{3, 0, 1, 2}));
  EXPECT_EQ(KlPartners(5, 2, 1), (std::vector<int64_t>{1, 0, 3, 2, 4}));  // batches [0,1] [2,3] [4]
  // Two contiguous shards of 3 and 2 rows (the first n % shards get one more), each its own batch.
  EXPECT_EQ(KlPartners(5, 1000, 2), (std::vector<int64_t>{2, 0, 1, 4, 3}));
}

TEST(KtoData, EachRowBecomesTargetKlAndTagRowsWithThePreviousAnswerAsKlCompletion) {
  TempDir d;
  auto data = PrepareSftData(KtoConfig(d));
  ASSERT_TRUE(data.ok()) << data.status().message();
  ASSERT_TRUE(data->kto);
  ASSERT_EQ(data->cache->size(), 9);
  EXPECT_EQ(data->train, (std::vector<int64_t>{0, 3, 6}));
  const int previous[] = {2, 0, 1};
  const int32_t tags[] = {1, 0, 1};
  for (int i = 0; i < 3; ++i) {
    const int64_t row = 3 * i;
    EXPECT_EQ(LabelText(*data->cache, row).rfind("a" + std::to_string(i), 0), 0u) << LabelText(*data->cache, row);
    EXPECT_EQ(LabelText(*data->cache, row + 1).rfind("a" + std::to_string(previous[i]), 0), 0u);
    EXPECT_NE(InputText(*data->cache, row + 1).find("q" + std::to_string(i)), std::string::npos) << "its own prompt";
    ASSERT_EQ(data->cache->input_ids(row + 2).size(), 1u);
    EXPECT_EQ(data->cache->input_ids(row + 2)[0], tags[i]);
  }
}

TEST(KtoData, StageAndDatasetMustAgreeAndTheTagMustBeABoolean) {
  TempDir d;
  DataConfig plain = KtoConfig(d);
  plain.datasets = {"plain"};
  auto r = PrepareSftData(plain);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has no kto_tag column"), std::string::npos) << r.status().message();
  DataConfig sft = KtoConfig(d);
  sft.kto = false;
  r = PrepareSftData(sft);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("holds KTO rows"), std::string::npos) << r.status().message();
  DataConfig chat = KtoConfig(d);
  chat.datasets = {"kto_chat"};
  r = PrepareSftData(chat);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->cache->input_ids(2)[0], 0);
  DataConfig bad = KtoConfig(d);
  d.Write("kto.json", R"([{"instruction": "q", "output": "a", "tag": "yes"}])");
  r = PrepareSftData(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("field 'tag': must be true or false"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace anneal::data
