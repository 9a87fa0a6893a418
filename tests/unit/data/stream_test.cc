#include "trainer/data/stream.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/unit/data/test_dir.h"
#include "trainer/data/row_reader.h"

namespace anneal::data {
namespace {

using testing::TempDir;

// Every conversation of the stream, read `batch` at a time.
std::vector<Conversation> Drain(const std::vector<DatasetAttr>& attrs, const LoadOptions& o, size_t batch,
                                LoadReport* report) {
  auto stream = ConversationStream::Open(attrs, o, report);
  EXPECT_TRUE(stream.ok()) << stream.status().message();
  std::vector<Conversation> out;
  if (!stream.ok()) return out;
  for (bool more = true; more;) {
    auto next = (*stream)->Next(batch, &out);
    EXPECT_TRUE(next.ok()) << next.status().message();
    if (!next.ok()) break;
    more = *next;
  }
  return out;
}

void ExpectSame(const std::vector<Conversation>& got, const std::vector<Conversation>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].origin, want[i].origin) << i;
    EXPECT_EQ(got[i].system, want[i].system) << i;
    ASSERT_EQ(got[i].messages.size(), want[i].messages.size()) << i;
    for (size_t m = 0; m < got[i].messages.size(); ++m)
      EXPECT_EQ(got[i].messages[m].content, want[i].messages[m].content);
  }
}

std::string AlpacaLine(int i, size_t pad) {
  return nlohmann::json{{"instruction", "q" + std::to_string(i) + std::string(pad, 'x')}, {"output", "a"}}.dump();
}

TEST(RowReader, JsonArrayElementsLongerThanABlockKeepTheirLines) {
  TempDir d;
  // Elements of 0.7 MiB cross the 1 MiB read blocks; strings hold brackets, commas and escaped quotes.
  std::string text = "\xEF\xBB\xBF\n[\n";
  for (int i = 0; i < 5; ++i) {
    if (i) text += ",\n";
    text += "  {\"instruction\": \"[,]\\\"{" + std::string(700000, 'y') + "\",\n   \"output\": \"" + std::to_string(i) +
            "\"}";
  }
  text += "\n]\n";
  const std::string path = d.Write("a.json", text);
  auto rows = internal::ReadAllRows(path);
  ASSERT_TRUE(rows.ok()) << rows.status().message();
  ASSERT_EQ(rows->size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*rows)[i].origin, path + ":" + std::to_string(3 + 2 * i));
    EXPECT_EQ((*rows)[i].value["output"], std::to_string(i));
  }
  EXPECT_EQ((*rows)[0].value["instruction"].get<std::string>().substr(0, 5), "[,]\"{");
}

TEST(RowReader, RefusesWhatIsNotAnArrayOrNeverEnds) {
  TempDir d;
  auto not_array = internal::ReadAllRows(d.Write("o.json", "{\"a\": 1}"));
  EXPECT_NE(not_array.status().message().find("o.json:1: a .json dataset must be an array of rows"), std::string::npos);
  auto open = internal::ReadAllRows(d.Write("u.json", "[{\"a\": 1},\n{\"a\": 2}"));
  EXPECT_NE(open.status().message().find("u.json:2: unterminated JSON array"), std::string::npos);
}

TEST(RowReader, TextLinesSplitOnEveryNewlineAcrossBlocks) {
  TempDir d;
  // A \r\n whose \r ends the first 1 MiB block; a lone \r; an empty line; no row after the final newline.
  std::string first(size_t{1} << 20, 'a');
  first.back() = '\r';
  const std::string path = d.Write("t.txt", first + "\nb\rc\n\nd\n");
  auto rows = internal::ReadAllRows(path);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 5u);
  EXPECT_EQ((*rows)[0].value["text"].get<std::string>().size(), (size_t{1} << 20) - 1);
  EXPECT_EQ((*rows)[1].value["text"], "b");
  EXPECT_EQ((*rows)[2].value["text"], "c");
  EXPECT_EQ((*rows)[3].value["text"], "");
  EXPECT_EQ((*rows)[4].value["text"], "d");
  EXPECT_EQ((*rows)[4].origin, path + ":5");
}

TEST(Stream, JsonLinesEqualLoadingWholeWithBadRowsAndMaxSamples) {
  TempDir d;
  std::string text;
  for (int i = 0; i < 3000; ++i) {
    text += i % 97 == 5 ? "{broken\n" : AlpacaLine(i, static_cast<size_t>(i % 700)) + "\n";
    if (i % 50 == 0) text += "  \n";  // blank lines count but give no row
  }
  d.Write("d.jsonl", text.substr(0, text.size() - 1));  // the last line without its newline
  auto attrs = ResolveDatasets({"d.jsonl"}, d.path());
  ASSERT_TRUE(attrs.ok());
  for (std::optional<int64_t> max : {std::optional<int64_t>(), std::optional<int64_t>(1234)}) {
    LoadOptions o;
    o.skip_bad_rows = true;
    o.max_samples = max;
    LoadReport whole_report, stream_report;
    auto whole = LoadAndMixDatasets(*attrs, o, &whole_report);
    ASSERT_TRUE(whole.ok());
    ExpectSame(Drain(*attrs, o, 100, &stream_report), *whole);
    EXPECT_EQ(stream_report.rows, whole_report.rows);
    EXPECT_EQ(stream_report.skipped, whole_report.skipped);
    EXPECT_EQ(stream_report.skipped_examples, whole_report.skipped_examples);
  }
  LoadOptions strict;
  auto s = ConversationStream::Open(*attrs, strict, nullptr);
  ASSERT_TRUE(s.ok());
  std::vector<Conversation> out;
  StatusOr<bool> more = true;
  while (more.ok() && *more) more = (*s)->Next(64, &out);
  EXPECT_NE(more.status().message().find("d.jsonl:7: not valid JSON (set skip_bad_rows"), std::string::npos)
      << more.status().message();
}

TEST(Stream, InterleavesAsLoadAndMixDatasets) {
  TempDir d;
  for (auto [name, n] : {std::pair{"a.jsonl", 40}, std::pair{"b.jsonl", 17}, std::pair{"c.jsonl", 0}}) {
    std::string text;
    for (int i = 0; i < n; ++i) text += AlpacaLine(i, 3) + "\n";
    d.Write(name, text);
  }
  auto attrs = ResolveDatasets({"a.jsonl", "b.jsonl"}, d.path());
  ASSERT_TRUE(attrs.ok());
  for (const char* strategy : {"concat", "interleave_under", "interleave_over", "interleave_once"}) {
    for (std::vector<double> probs : {std::vector<double>{}, std::vector<double>{0.3, 0.7}}) {
      if (std::string(strategy) == "concat" && !probs.empty()) continue;
      LoadOptions o;
      o.mix_strategy = strategy;
      o.interleave_probs = probs;
      o.seed = 3;
      auto whole = LoadAndMixDatasets(*attrs, o, nullptr);
      ASSERT_TRUE(whole.ok());
      SCOPED_TRACE(strategy);
      ExpectSame(Drain(*attrs, o, 7, nullptr), *whole);
    }
  }
  // An empty dataset drawn with a probability: MixIndices' own error, by name.
  auto with_empty = ResolveDatasets({"a.jsonl", "c.jsonl"}, d.path());
  LoadOptions o;
  o.mix_strategy = "interleave_under";
  o.interleave_probs = {0.5, 0.5};
  auto whole = LoadAndMixDatasets(*with_empty, o, nullptr);
  auto stream = ConversationStream::Open(*with_empty, o, nullptr);
  ASSERT_FALSE(whole.ok());
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().message(), whole.status().message());
}

TEST(Stream, RefusesSplitSlicesAndNumSamplesByName) {
  DatasetAttr sliced;
  sliced.name = "s";
  sliced.split = "train[10%:]";
  DatasetAttr sampled;
  sampled.name = "n";
  sampled.num_samples = 5;
  std::string why;
  EXPECT_FALSE(CanStream({sliced}, &why));
  EXPECT_NE(why.find("dataset 's' has split 'train[10%:]'"), std::string::npos) << why;
  EXPECT_FALSE(CanStream({sampled}, &why));
  EXPECT_NE(why.find("dataset 'n' has num_samples"), std::string::npos) << why;
  auto s = ConversationStream::Open({sampled}, LoadOptions{}, nullptr);
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace anneal::data
