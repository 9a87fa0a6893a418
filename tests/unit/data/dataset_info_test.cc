// dataset_info.json in full (trainer/data/dataset_info.cc), csv files and per-dataset sampling (dataset.h).
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/unit/data/test_dir.h"
#include "trainer/data/dataset.h"

namespace anneal::data {
namespace {

using testing::TempDir;

std::string Error(const TempDir& d, const std::string& entry) {
  d.Write("rows.jsonl", "{\"instruction\": \"q\", \"output\": \"a\"}\n");
  d.Write("dataset_info.json", "{\"x\": " + entry + "}");
  auto r = ResolveDatasets({"x"}, d.path());
  return r.ok() ? "ok" : r.status().message();
}

TEST(DatasetInfo, RefusesWhatIsNotBuiltByName) {
  TempDir d;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"hf_hub_url": "llamafactory/alpaca_en"})", "\"hf_hub_url\" loads from Hugging Face Hub"},
      {R"({"ms_hub_url": "x"})", "\"ms_hub_url\""},
      {R"({"script_url": "x"})", "\"script_url\""},
      {R"({"cloud_file_name": "s3://x"})", "\"cloud_file_name\""},
      {R"({"file_name": "rows.jsonl", "formatting": "tokenized", "ranking": true})", "not formatting \"tokenized\""},
      {R"({"file_name": "rows.jsonl", "formatting": "openai"})", "formatting \"openai\""},
      {R"({"file_name": "rows.jsonl", "formatting": "plain"})", "formatting \"plain\""},
      {R"({"file_name": "rows.jsonl", "columns": {"images": "images"}})", "column \"images\": multimodal"},
      {R"({"file_name": "rows.jsonl", "columns": {"audios": "a"}})", "column \"audios\": multimodal"},
      {R"({"file_name": "rows.jsonl", "ranking": true, "columns": {"kto_tag": "k"}})",
       "either preference pairs (ranking) or tagged answers (kto_tag)"},
      {R"({"file_name": "rows.jsonl", "formatting": "tokenized", "columns": {"kto_tag": "k"}})",
       "a \"kto_tag\" column needs alpaca or sharegpt rows"},
      {R"({"file_name": "rows.jsonl", "columns": {"answer": "a"}})", "unknown column key \"answer\""},
      {R"({"file_name": "rows.jsonl", "tags": {"speaker_tag": "s"}})", "unknown tag \"speaker_tag\""},
      {R"({"file_name": "rows.jsonl", "stream": true})", "unknown key \"stream\""},
      {R"({"file_name": "rows.jsonl", "split": "validation"})", "split 'validation'"},
      {R"({"file_name": "rows.jsonl", "split": "train[10%:5]"})", "same unit"},
      {R"({"file_name": "rows.jsonl", "num_samples": -1})", "\"num_samples\" must be a non-negative integer"},
      {R"({"file_name": "rows.jsonl", "columns": {"prompt": 3}})", "\"prompt\" must be a string"},
      {R"({"file_name": "nothing.jsonl"})", "not found"},
      {R"({"file_name": "rows.xml"})", "not found"},
  };
  for (const auto& [entry, want] : cases) {
    std::string got = Error(d, entry);
    EXPECT_NE(got.find(want), std::string::npos) << entry << " -> " << got;
    if (got != "ok") {
      EXPECT_NE(got.find("dataset 'x'"), std::string::npos) << got;
    }
  }
}

TEST(DatasetInfo, AcceptsLlamaFactoryKeysAndIgnoresSubsetAndFolderForFiles) {
  TempDir d;
  EXPECT_EQ(Error(d, R"({"file_name": "rows.jsonl", "formatting": "alpaca", "ranking": false, "subset": "s",
      "folder": "f", "split": "train", "num_samples": 3, "columns": {"prompt": "instruction", "response": "output",
      "images": null}, "tags": {"role_tag": "from"}})"),
            "ok");
}

TEST(DatasetInfo, DirectoryOfOneFileTypeReadInNameOrder) {
  TempDir d;
  std::filesystem::create_directories(d.path() + "/shards");
  d.Write("shards/b.jsonl", "{\"instruction\": \"second\", \"output\": \"a\"}\n");
  d.Write("shards/a.jsonl", "{\"instruction\": \"first\", \"output\": \"a\"}\n");
  d.Write("dataset_info.json", R"({"dir": {"file_name": "shards"}})");
  auto rows = LoadDatasets({"dir"}, d.path(), {}, nullptr);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].messages[0].content, "first");
  d.Write("shards/c.csv", "instruction,output\nthird,a\n");
  auto mixed = LoadDatasets({"dir"}, d.path(), {}, nullptr);
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.status().message().find("must have one type"), std::string::npos) << mixed.status().message();
}

TEST(DatasetInfo, CsvRowsBecomeTheSameConversationsAsJson) {
  TempDir d;
  d.Write("a.csv", "instruction,input,output\n\"Say \"\"hi\"\"\",,\"two\nlines\"\nAdd,1 and 2,3\n");
  d.Write("a.jsonl",
          "{\"instruction\": \"Say \\\"hi\\\"\", \"input\": \"\", \"output\": \"two\\nlines\"}\n"
          "{\"instruction\": \"Add\", \"input\": \"1 and 2\", \"output\": \"3\"}\n");
  auto csv = LoadDatasets({d.path() + "/a.csv"}, d.path(), {}, nullptr);
  auto json = LoadDatasets({d.path() + "/a.jsonl"}, d.path(), {}, nullptr);
  ASSERT_TRUE(csv.ok()) << csv.status().message();
  ASSERT_TRUE(json.ok());
  ASSERT_EQ(csv->size(), json->size());
  for (size_t i = 0; i < csv->size(); ++i) {
    ASSERT_EQ((*csv)[i].messages.size(), (*json)[i].messages.size());
    for (size_t k = 0; k < (*csv)[i].messages.size(); ++k)
      EXPECT_EQ((*csv)[i].messages[k].content, (*json)[i].messages[k].content);
  }
  EXPECT_EQ((*csv)[1].messages[0].content, "Add\n1 and 2");
}

TEST(DatasetInfo, CsvErrorsNameFileRowAndColumn) {
  TempDir d;
  std::string path = d.Write("n.csv", "instruction,output\nq,1\n");  // output inferred as an integer column
  auto rows = LoadDatasets({path}, d.path(), {}, nullptr);
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("n.csv:row 0"), std::string::npos) << rows.status().message();
  EXPECT_NE(rows.status().message().find("'output'"), std::string::npos) << rows.status().message();
  std::string ragged = d.Write("r.csv", "instruction,output\nq,a,extra\n");
  auto bad = LoadDatasets({ragged}, d.path(), {}, nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("r.csv"), std::string::npos) << bad.status().message();
}

TEST(DatasetInfo, NumSamplesFollowsNumpysSeededPermutationThenMaxSamples) {
  TempDir d;
  std::string rows;
  for (int i = 0; i < 10; ++i) rows += "{\"instruction\": \"q" + std::to_string(i) + "\", \"output\": \"a\"}\n";
  d.Write("rows.jsonl", rows);
  d.Write("dataset_info.json", R"({"s": {"file_name": "rows.jsonl", "num_samples": 4},
      "cut": {"file_name": "rows.jsonl", "split": "train[-3:]"}})");
  LoadOptions o;
  o.seed = 42;  // np.random.seed(42); np.random.permutation(10) = [8 1 5 0 7 2 9 4 3 6]
  auto s = LoadDatasets({"s"}, d.path(), o, nullptr);
  ASSERT_TRUE(s.ok()) << s.status().message();
  std::vector<std::string> got;
  for (const auto& c : *s) got.push_back(c.messages[0].content);
  EXPECT_EQ(got, (std::vector<std::string>{"q8", "q1", "q5", "q0"}));
  o.max_samples = 2;
  EXPECT_EQ(LoadDatasets({"s"}, d.path(), o, nullptr)->size(), 2u);
  auto cut = LoadDatasets({"cut"}, d.path(), {}, nullptr);
  ASSERT_TRUE(cut.ok());
  ASSERT_EQ(cut->size(), 3u);
  EXPECT_EQ((*cut)[0].messages[0].content, "q7");
}

TEST(DatasetInfo, TextFilesAreOneRowPerLineWithTheirTextAsPrompt) {
  TempDir d;
  std::string path = d.Write("w.txt", "first\r\nsecond\rthird\n\nlast");
  LoadOptions o;
  o.response_optional = true;  // stage pt
  auto rows = LoadDatasets({path}, d.path(), o, nullptr);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  std::vector<std::string> got;
  for (const auto& c : *rows) got.push_back(c.messages[0].content);
  EXPECT_EQ(got, (std::vector<std::string>{"first", "second", "third", "", "last"}));
  EXPECT_NE((*rows)[1].origin.find("w.txt:2"), std::string::npos) << (*rows)[1].origin;
}

}  // namespace
}  // namespace anneal::data
