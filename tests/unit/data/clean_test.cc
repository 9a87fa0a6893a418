#include "trainer/data/clean.h"

#include <gtest/gtest.h>

namespace anneal::data {
namespace {

Conversation Chat(const std::string& user, const std::string& answer, const std::string& origin) {
  Conversation c;
  c.messages = {{Role::kUser, user}, {Role::kAssistant, answer}};
  c.origin = origin;
  return c;
}

TEST(Clean, MinHashEqualsDatasketch) {
  // datasketch 2.0: m = MinHash(num_perm=4, seed=1); m.update(b"hello"); m.update(b"world"); m.hashvalues
  EXPECT_EQ(MinHashSignature({"hello", "world"}, 4, 1),
            (std::vector<uint32_t>{625790555u, 194865109u, 1355773502u, 1324736089u}));
  EXPECT_EQ(MinHashSignature({}, 2, 1), (std::vector<uint32_t>{0xFFFFFFFFu, 0xFFFFFFFFu}));
}

TEST(Clean, LshParametersEqualDatasketchs) {
  EXPECT_EQ(LshParameters(0.8, 128), std::make_pair(9, 13));
  EXPECT_EQ(LshParameters(0.7, 128), std::make_pair(14, 9));
  EXPECT_EQ(LshParameters(0.5, 256), std::make_pair(42, 6));
}

TEST(Clean, ShinglesAreCodePoints) {
  EXPECT_EQ(CharShingles("abcd", 3), (std::vector<std::string>{"abc", "bcd"}));
  EXPECT_EQ(CharShingles("\xC3\xA9t\xC3\xA9", 2), (std::vector<std::string>{"\xC3\xA9t", "t\xC3\xA9"}));
  EXPECT_EQ(CharShingles("ab", 5), (std::vector<std::string>{"ab"}));
  EXPECT_TRUE(CharShingles("", 5).empty());
}

TEST(Clean, StripMarkupKeepsTextAndDecodesEntities) {
  EXPECT_EQ(StripMarkup("<div>a<br/>b</div>"), "\na\nb\n");
  EXPECT_EQ(StripMarkup("x<script type='t'>evil()</script>y<!-- c -->z"), "xyz");
  EXPECT_EQ(StripMarkup("1 < 2 &amp;&amp; 3 &gt; 2 &#65;&#x42; &bogus;"), "1 < 2 && 3 > 2 AB &bogus;");
  EXPECT_EQ(StripMarkup("<STYLE>p{}</STYLE><b>bold</b>"), "bold");
}

TEST(Clean, ReportsEveryDropWithItsReason) {
  std::vector<Conversation> rows = {Chat("hello there", "general kenobi", "f:1"),
                                    Chat("hello there", "general kenobi", "f:2"), Chat("a", "b", "f:3"),
                                    Chat(std::string(300, 'x'), "y", "f:4")};
  CleanOptions o;
  o.min_chars = 5;
  o.max_chars = 100;
  auto r = CleanConversations(rows, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->kept.size(), 1u);
  ASSERT_EQ(r->dropped.size(), 3u);
  EXPECT_EQ(r->dropped[0].reason, "exact_duplicate");
  EXPECT_EQ(r->dropped[0].duplicate_of, "f:1");
  EXPECT_EQ(r->dropped[1].reason, "too_short");
  EXPECT_EQ(r->dropped[2].reason, "too_long");
  EXPECT_EQ(r->dropped_by_reason.at("exact_duplicate"), 1);
}

TEST(Clean, NearDuplicatesDroppedDistinctKept) {
  std::string base = "the quick brown fox jumps over the lazy dog and keeps running through the forest all day";
  std::string near = base;
  near.replace(near.find("lazy"), 4, "idle");
  std::vector<Conversation> rows = {Chat(base, "ok", "f:1"), Chat(near, "ok", "f:2"),
                                    Chat("completely different words about training language models", "ok", "f:3")};
  CleanOptions o;
  o.near_dedup = true;
  o.jaccard_threshold = 0.7;
  auto r = CleanConversations(rows, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->kept.size(), 2u);
  EXPECT_EQ(r->kept[1].origin, "f:3");
  ASSERT_EQ(r->dropped.size(), 1u);
  EXPECT_EQ(r->dropped[0].reason, "near_duplicate");
  EXPECT_EQ(r->dropped[0].duplicate_of, "f:1");
}

TEST(Clean, NormalizesAndRefusesBadOptions) {
  auto r = CleanConversations({Chat("e\xCC\x81", "x", "f:1")}, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kept[0].messages[0].content, "\xC3\xA9");  // NFC by default
  CleanOptions bad;
  bad.normalize = "NFX";
  EXPECT_NE(CleanConversations({}, bad).status().message().find("normalize 'NFX'"), std::string::npos);
  CleanOptions t;
  t.near_dedup = true;
  t.jaccard_threshold = 1.0;
  EXPECT_NE(CleanConversations({}, t).status().message().find("jaccard threshold 1"), std::string::npos);
}

}  // namespace
}  // namespace anneal::data
