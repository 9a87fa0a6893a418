#include "trainer/data/language_filter.h"

#include <gtest/gtest.h>

#include "trainer/data/clean.h"

namespace anneal::data {
namespace {

TEST(LanguageFilter, KeepsTheAskedLanguagesAndNamesTheOthers) {
  auto f = LanguageFilter::Create({"en", "zh"}, 0.5);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(f->Keeps(f->Detect("The committee will publish its final report on the new railway next spring.")));
  EXPECT_TRUE(f->Keeps(f->Detect("今天天气很好，我们一起去公园散步，然后在湖边吃午饭。")));
  LanguageDetection fr = f->Detect("Le gouvernement a annoncé hier une nouvelle réforme des retraites très contestée.");
  EXPECT_FALSE(f->Keeps(fr));
  EXPECT_EQ(fr.language, "fr");
  EXPECT_LT(fr.confidence, 0.5);
  LanguageDetection de =
      f->Detect("Die Regierung hat gestern eine umstrittene Reform der Rentenversicherung angekündigt.");
  EXPECT_FALSE(f->Keeps(de));
  EXPECT_EQ(de.language, "de");
}

TEST(LanguageFilter, TextWithoutLettersIsKeptAndTooShortIsUndetermined) {
  auto f = LanguageFilter::Create({"en"}, 0.5);
  ASSERT_TRUE(f.ok());
  LanguageDetection digits = f->Detect("12 + 30 = 42; 7 * 6 = 42.");
  EXPECT_FALSE(digits.has_letters);
  EXPECT_TRUE(f->Keeps(digits));
  LanguageDetection ok = f->Detect("ok");
  EXPECT_EQ(ok.language, "un");
  EXPECT_FALSE(f->Keeps(ok));
  auto with_un = LanguageFilter::Create({"en", "un"}, 0.5);
  ASSERT_TRUE(with_un.ok());
  EXPECT_TRUE(with_un->Keeps(with_un->Detect("ok")));
}

TEST(LanguageFilter, BareCodeAllowsVariantsAndAliasesResolve) {
  // CLD2 reports traditional Chinese as zh-Hant; "zh" allows it.
  auto zh = LanguageFilter::Create({"ZH"}, 0.5);
  ASSERT_TRUE(zh.ok());
  EXPECT_TRUE(zh->Keeps(zh->Detect("我們今天晚上要去電影院看一部關於歷史的電影，你要不要一起來？")));
  auto he = LanguageFilter::Create({"he"}, 0.5);
  ASSERT_TRUE(he.ok());
  EXPECT_TRUE(he->Keeps(he->Detect("הממשלה הודיעה אתמול על רפורמה חדשה בתחבורה הציבורית בכל רחבי הארץ.")));
}

TEST(LanguageFilter, ConfidenceIsTheShareOfTheAskedLanguages) {
  // Half English, half Russian: CLD2 splits the text; each alone covers about half of it.
  const std::string mixed =
      "The weather today is wonderful and we are going to walk in the park near the river. "
      "Сегодня прекрасная погода, и мы пойдём гулять в парк у реки вместе с друзьями.";
  auto en = LanguageFilter::Create({"en"}, 0.9);
  auto both = LanguageFilter::Create({"en", "ru"}, 0.9);
  ASSERT_TRUE(en.ok() && both.ok());
  LanguageDetection d_en = en->Detect(mixed);
  EXPECT_GT(d_en.confidence, 0.2);
  EXPECT_LT(d_en.confidence, 0.8);
  EXPECT_FALSE(en->Keeps(d_en));
  EXPECT_EQ(d_en.language, "ru");
  EXPECT_GE(both->Detect(mixed).confidence, 0.9);
  EXPECT_TRUE(both->Keeps(both->Detect(mixed)));
}

TEST(LanguageFilter, RefusesUnknownCodesAndBadConfidence) {
  auto bogus = LanguageFilter::Create({"en", "xx"}, 0.5);
  ASSERT_FALSE(bogus.ok());
  EXPECT_NE(bogus.status().message().find("unknown language 'xx'"), std::string::npos) << bogus.status().message();
  EXPECT_FALSE(LanguageFilter::Create({"klingon"}, 0.5).ok());
  EXPECT_FALSE(LanguageFilter::Create({}, 0.5).ok());
  EXPECT_FALSE(LanguageFilter::Create({"en"}, 0).ok());
  EXPECT_FALSE(LanguageFilter::Create({"en"}, 1.5).ok());
}

Conversation Row(std::string origin, std::string user, std::string assistant) {
  Conversation c;
  c.origin = std::move(origin);
  c.messages = {{Role::kUser, std::move(user)}, {Role::kAssistant, std::move(assistant)}};
  return c;
}

TEST(CleanConversations, LanguageFilterDropsWithTheDetectedLanguage) {
  std::vector<Conversation> rows = {
      Row("a:0", "What is the capital of France?", "The capital of France is Paris, a city on the Seine."),
      Row("a:1", "Quelle est la capitale de la France ?", "La capitale de la France est Paris, sur la Seine."),
      Row("a:2", "法国的首都是哪里？", "法国的首都是巴黎，位于塞纳河畔，是一座历史悠久的城市。")};
  CleanOptions o;
  o.languages = {"en", "zh"};
  auto r = CleanConversations(rows, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->kept.size(), 2u);
  ASSERT_EQ(r->dropped.size(), 1u);
  EXPECT_EQ(r->dropped[0].origin, "a:1");
  EXPECT_EQ(r->dropped[0].reason, "wrong_language");
  EXPECT_EQ(r->dropped[0].language, "fr");
  EXPECT_EQ(r->dropped_by_reason.at("wrong_language"), 1);
  EXPECT_EQ(r->dropped_by_language.at("fr"), 1);
  o.languages = {"en", "qq"};
  auto bad = CleanConversations(rows, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'qq'"), std::string::npos);
}

}  // namespace
}  // namespace anneal::data
