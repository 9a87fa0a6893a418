#include "trainer/data/tokenizer.h"

#include <gtest/gtest.h>

#include "trainer/data/chat_template.h"
#include "trainer/data/utf8.h"

namespace anneal::data {
namespace {

// A tiny byte-level BPE: h e l o and merges "h e", "l l", "he ll", "hell o".
const char* kTinyByteLevel = R"({
  "added_tokens": [{"id": 9, "content": "<eos>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "he": 4, "ll": 5, "hell": 6, "hello": 7, "Ġ": 8},
            "merges": ["h e", "l l", "he ll", "hell o"]}
})";

TEST(Tokenizer, MergesByRankAndMatchesAddedTokens) {
  auto tok = Tokenizer::FromJsonText(kTinyByteLevel, "tiny.json", R"({"eos_token": "<eos>"})");
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  auto ids = (*tok)->Encode("hello<eos>hel");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{7, 9, 4, 2}));
  EXPECT_EQ((*tok)->Decode(*ids), "hello<eos>hel");
  EXPECT_EQ((*tok)->Decode(*ids, /*skip_special_tokens=*/true), "hellohel");
  EXPECT_EQ((*tok)->eos_id(), 9);
}

TEST(Tokenizer, UnsupportedPartsAreNamedErrors) {
  std::string bad = kTinyByteLevel;
  const std::string from = "\"pre_tokenizer\": {\"type\": \"ByteLevel\"";
  bad.replace(bad.find(from), from.size(), "\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"");
  auto tok = Tokenizer::FromJsonText(bad, "bad.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("pre_tokenizer.type"), std::string::npos) << tok.status().message();
  EXPECT_NE(tok.status().message().find("bad.json"), std::string::npos);
  EXPECT_FALSE(Tokenizer::FromJsonText("{not json", "x.json").ok());
  EXPECT_FALSE(Tokenizer::Load("/nonexistent/dir").ok());
}

TEST(Tokenizer, AddSpecialTokenGivesNextIdAndSplitsText) {
  auto tok = Tokenizer::FromJsonText(kTinyByteLevel, "tiny.json");
  ASSERT_TRUE(tok.ok());
  int32_t id = (*tok)->AddSpecialToken("<|stop|>");
  EXPECT_EQ(id, 10);
  auto ids = (*tok)->Encode("he<|stop|>");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{4, 10}));
}

TEST(Utf8, LossyRepairReplacesMaximalSubparts) {
  EXPECT_EQ(Utf8Lossy("a\xff"
                      "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(Utf8Lossy("\xe2\x82"), "\xEF\xBF\xBD");                              // one truncated sequence -> one U+FFFD
  EXPECT_EQ(Utf8Lossy("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: 3 subparts
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo"));
}

TEST(ChatTemplate, UnknownNameListsKnownOnes) {
  auto t = GetChatTemplate("vicuna");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("llama3"), std::string::npos);
  EXPECT_NE(t.status().message().find("qwen"), std::string::npos);
  EXPECT_EQ(KnownChatTemplates().size(), 12u);  // qwen3 and qwen3_nothink joined the ten
}

// Found by bench/fuzz/tokenizer_fuzz.cc: a field of the wrong JSON type (a list where a string belongs) threw
// nlohmann's type_error out of FromJsonText, which terminated the process.
TEST(Tokenizer, AFieldOfTheWrongTypeIsAnErrorNotAnException) {
  for (const char* text : {R"({"model": {"type": ["BPE"]}})", R"({"model": {"type": "BPE", "vocab": {}, "merges": []},
                             "post_processor": {"type": ["TemplateProcessing"]}})"}) {
    auto tok = Tokenizer::FromJsonText(text, "bad.json");
    ASSERT_FALSE(tok.ok()) << text;
    EXPECT_EQ(tok.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(tok.status().message().find("bad.json"), std::string::npos) << tok.status().message();
  }
}

// Found by the tokenizer fuzz target: a negative vocab id indexed the id table out of bounds, and a huge one
// would have allocated a table of that size.
TEST(Tokenizer, AVocabIdOutsideTheTableIsRefusedNamingTheToken) {
  for (const char* id : {"-1", "2147483647", "99999999999"}) {
    const std::string text =
        std::string(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": )") + id + R"(}, "merges": []}})";
    auto tok = Tokenizer::FromJsonText(text, "bad.json");
    ASSERT_FALSE(tok.ok()) << id;
    EXPECT_EQ(tok.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(tok.status().message().find("vocab['b']: id " + std::string(id) + " is outside"), std::string::npos)
        << tok.status().message();
  }
}

}  // namespace
}  // namespace anneal::data
