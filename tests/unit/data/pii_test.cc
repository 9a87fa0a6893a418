#include "trainer/data/pii.h"

#include <gtest/gtest.h>

namespace anneal::data {
namespace {

std::string MaskAll(const std::string& text, PiiCounts* counts = nullptr) {
  auto m = PiiMasker::Create({"email", "phone", "id"});
  EXPECT_TRUE(m.ok());
  return m->Mask(text, counts);
}

TEST(PiiMasker, MasksEmails) {
  PiiCounts c;
  EXPECT_EQ(MaskAll("write to bob.smith+ml@mail.example.co.uk, or ana@x.io.", &c), "write to <EMAIL>, or <EMAIL>.");
  EXPECT_EQ(c.by_kind["email"], 2);
  EXPECT_EQ(MaskAll("an @ sign and user@localhost stay"), "an @ sign and user@localhost stay");
}

TEST(PiiMasker, MasksPhoneNumbers) {
  EXPECT_EQ(MaskAll("call +1 415 555 0100 today"), "call <PHONE> today");
  EXPECT_EQ(MaskAll("ring (415) 555-0100 or 415-555-0100"), "ring <PHONE> or <PHONE>");
  EXPECT_EQ(MaskAll("+44 20 7946 0958"), "<PHONE>");
  EXPECT_EQ(MaskAll("手机13812345678，或 138 1234 5678"), "手机<PHONE>，或 <PHONE>");
}

TEST(PiiMasker, MasksIdNumbersWithValidChecksums) {
  // 11010519491231002X: the MOD 11-2 check character of 11010519491231002 is X.
  EXPECT_EQ(MaskAll("身份证号 11010519491231002X 已登记"), "身份证号 <ID> 已登记");
  EXPECT_EQ(MaskAll("card 4111 1111 1111 1111 exp"), "card <ID> exp");
  EXPECT_EQ(MaskAll("ssn 123-45-6789."), "ssn <ID>.");
  // A wrong check digit, a number failing Luhn, an SSN with area 000: not IDs.
  EXPECT_EQ(MaskAll("110105194912310021"), "110105194912310021");
  EXPECT_EQ(MaskAll("4111 1111 1111 1112"), "4111 1111 1111 1112");
  EXPECT_EQ(MaskAll("000-12-3456"), "000-12-3456");
}

TEST(PiiMasker, LeavesOrdinaryNumbersAlone) {
  for (const char* text : {"on 2024-01-15 at 10:30", "order 1700000000123 shipped", "sha 3f2a9c81d4e5b6a7",
                           "version 1.2.3.4", "pi is 3.14159265358979", "ip 192.168.10.200", "x = 12345678"}) {
    EXPECT_EQ(MaskAll(text), text);
  }
}

TEST(PiiMasker, MasksOnlyTheKindsAsked) {
  auto m = PiiMasker::Create({"email"});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->Mask("a@b.com +1 415 555 0100", nullptr), "<EMAIL> +1 415 555 0100");
  auto none = PiiMasker::Create({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(PiiMasker, RefusesUnknownKinds) {
  auto m = PiiMasker::Create({"email", "address"});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("unknown kind 'address'"), std::string::npos);
}

TEST(PiiChecksums, LuhnAndChineseId) {
  EXPECT_TRUE(LuhnValid("4111111111111111"));
  EXPECT_TRUE(LuhnValid("3782-822463-10005"));
  EXPECT_FALSE(LuhnValid("4111111111111112"));
  EXPECT_TRUE(ChineseIdValid("11010519491231002X"));
  EXPECT_TRUE(ChineseIdValid("11010519491231002x"));
  EXPECT_FALSE(ChineseIdValid("110105194912310020"));
}

}  // namespace
}  // namespace anneal::data
