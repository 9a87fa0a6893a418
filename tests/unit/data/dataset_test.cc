#include "trainer/data/dataset.h"

#include <gtest/gtest.h>

#include "tests/unit/data/test_dir.h"

namespace anneal::data {
namespace {

using testing::TempDir;

TEST(Dataset, AlpacaJsonWithHistoryAndSystem) {
  TempDir d;
  d.Write("a.json", R"([
  {"instruction": "Add", "input": "1 and 2", "output": "3", "system": "math", "history": [["hi", "hello"]]},
  {"instruction": "Say hi", "input": "", "output": "hi"}
])");
  d.Write("dataset_info.json", R"({"demo": {"file_name": "a.json", "columns": {"prompt": "instruction",
      "query": "input", "response": "output", "system": "system", "history": "history"}}})");
  LoadReport r;
  auto rows = LoadDatasets({"demo"}, d.path(), {}, &r);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  ASSERT_EQ(rows->size(), 2u);
  const auto& c = (*rows)[0];
  ASSERT_EQ(c.messages.size(), 4u);
  EXPECT_EQ(c.messages[0].content, "hi");
  EXPECT_EQ(c.messages[2].content, "Add\n1 and 2");  // "prompt\nquery"
  EXPECT_EQ(c.messages[3].content, "3");
  EXPECT_EQ(c.system, "math");
  EXPECT_EQ((*rows)[1].messages[0].content, "Say hi");
}

TEST(Dataset, SharegptWithTagsAndSystemTurn) {
  TempDir d;
  d.Write("s.jsonl",
          R"({"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})"
          "\n");
  d.Write("dataset_info.json", R"({"chat": {"file_name": "s.jsonl", "formatting": "sharegpt",
      "columns": {"messages": "messages"}, "tags": {"role_tag": "role", "content_tag": "content",
      "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"}}})");
  auto rows = LoadDatasets({"chat"}, d.path(), {}, nullptr);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].system, "sys");
  ASSERT_EQ((*rows)[0].messages.size(), 2u);
  EXPECT_EQ((*rows)[0].messages[1].role, Role::kAssistant);
}

TEST(Dataset, MalformedRowNamesFileLineAndField) {
  TempDir d;
  std::string path = d.Write("bad.json", "[\n  {\"instruction\": \"ok\", \"output\": \"fine\"},\n"
                                         "  {\"instruction\": \"q\", \"output\": 42}\n]");
  auto rows = LoadDatasets({path}, d.path(), {}, nullptr);
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("bad.json:3"), std::string::npos) << rows.status().message();
  EXPECT_NE(rows.status().message().find("'output'"), std::string::npos) << rows.status().message();
}

TEST(Dataset, SkipBadRowsSkipsAndCounts) {
  TempDir d;
  std::string path = d.Write("mixed.jsonl",
                             "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]}\n"
                             "{not json\n"
                             "{\"conversations\": [{\"from\": \"gpt\", \"value\": \"wrong order\"}]}\n"
                             "{\"conversations\": [{\"from\": \"human\", \"value\": \"q2\"}, {\"from\": \"gpt\", \"value\": \"a2\"}]}\n");
  auto strict = LoadDatasets({path}, d.path(), {}, nullptr);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(strict.status().message().find("mixed.jsonl:2"), std::string::npos) << strict.status().message();
  LoadOptions o;
  o.skip_bad_rows = true;
  LoadReport r;
  auto rows = LoadDatasets({path}, d.path(), o, &r);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  EXPECT_EQ(rows->size(), 2u);
  EXPECT_EQ(r.skipped, 2);
  ASSERT_EQ(r.skipped_examples.size(), 2u);
  EXPECT_NE(r.skipped_examples[1].find("mixed.jsonl:3"), std::string::npos);
}

TEST(Dataset, PretokenizedRowsAndMixingWithMaxSamples) {
  TempDir d;
  std::string tok = d.Write("t.jsonl", "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 2, 3]}\n{\"input_ids\": [4]}\n"
                                       "{\"input_ids\": [5]}\n");
  std::string alp = d.Write("a.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"z\", \"output\": \"w\"}\n");
  LoadOptions o;
  o.max_samples = 2;
  auto rows = LoadDatasets({tok, alp}, d.path(), o, nullptr);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  ASSERT_EQ(rows->size(), 4u);  // two of each, concatenated in order
  EXPECT_TRUE((*rows)[0].pretokenized);
  EXPECT_EQ((*rows)[0].labels, (std::vector<int32_t>{-100, 2, 3}));
  EXPECT_TRUE((*rows)[1].labels.empty());
  EXPECT_FALSE((*rows)[2].pretokenized);
}

TEST(Dataset, UnknownNameIsAClearError) {
  TempDir d;
  d.Write("dataset_info.json", "{}");
  auto rows = LoadDatasets({"nope"}, d.path(), {}, nullptr);
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("nope"), std::string::npos);
}

TEST(Dataset, ValSplitIsSeededFractionOrCount) {
  auto a = SplitTrainVal(100, 0.1, 42);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->second.size(), 10u);
  EXPECT_EQ(a->first.size(), 90u);
  auto b = SplitTrainVal(100, 0.1, 42);
  EXPECT_EQ(a->second, b->second);
  auto c = SplitTrainVal(100, 0.1, 43);
  EXPECT_NE(a->second, c->second);
  auto n = SplitTrainVal(100, 7, 42);
  EXPECT_EQ(n->second.size(), 7u);
  EXPECT_FALSE(SplitTrainVal(5, 5, 42).ok());
}

}  // namespace
}  // namespace anneal::data
