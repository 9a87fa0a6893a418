#include "trainer/data/script_filter.h"

#include <gtest/gtest.h>

namespace anneal::data {
namespace {

TEST(ScriptFilter, KeepsTextInTheAskedScripts) {
  auto f = ScriptFilter::Create({"Latin", "zh"}, 0.8);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(f->Keeps("Bonjour, 你好!"));
  EXPECT_FALSE(f->Keeps("Привет, мир"));
  EXPECT_TRUE(f->Keeps("12 + 30 = 42; ...")) << "no letters: kept";
  // 4 Latin letters of 9: below 0.8.
  EXPECT_FALSE(f->Keeps("abcd Привет"));
  EXPECT_DOUBLE_EQ(f->AllowedFraction("abcd Прив"), 0.5);
}

TEST(ScriptFilter, NamesByCodeAndLanguageShortcut) {
  auto f = ScriptFilter::Create({"cyrl", "ja"}, 0.5);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(f->Keeps("こんにちは世界"));
  EXPECT_TRUE(f->Keeps("Привет"));
  EXPECT_FALSE(f->Keeps("hello world"));
  // Combining marks (Inherited) do not count: a decomposed "é" is one Latin letter.
  auto latin = ScriptFilter::Create({"Latn"}, 1.0);
  ASSERT_TRUE(latin.ok());
  EXPECT_TRUE(latin->Keeps("e\xCC\x81t\xC3\xA9"));
}

TEST(ScriptFilter, RefusesLatinLanguagesAndUnknownScripts) {
  auto en = ScriptFilter::Create({"en"}, 0.5);
  ASSERT_FALSE(en.ok());
  EXPECT_NE(en.status().message().find("statistical language model"), std::string::npos);
  EXPECT_NE(en.status().message().find("Latin"), std::string::npos);
  auto bogus = ScriptFilter::Create({"Klingonish"}, 0.5);
  ASSERT_FALSE(bogus.ok());
  EXPECT_NE(bogus.status().message().find("unknown script 'Klingonish'"), std::string::npos);
  EXPECT_FALSE(ScriptFilter::Create({"Common"}, 0.5).ok());
  EXPECT_FALSE(ScriptFilter::Create({"Latin"}, 0).ok());
  EXPECT_FALSE(ScriptFilter::Create({"Latin"}, 1.5).ok());
  EXPECT_FALSE(ScriptFilter::Create({}, 0.5).ok());
}

}  // namespace
}  // namespace anneal::data
