#include "trainer/data/split.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "trainer/data/numpy_random.h"

namespace anneal::data {
namespace {

TEST(NumpyGenerator, PermutationEqualsNumpys) {
  // np.random.default_rng(42).permutation(10); default_rng(7).permutation(5)
  EXPECT_EQ(NumpyGenerator(42).Permutation(10), (std::vector<int64_t>{5, 6, 0, 7, 3, 2, 4, 9, 1, 8}));
  EXPECT_EQ(NumpyGenerator(7).Permutation(5), (std::vector<int64_t>{2, 0, 4, 1, 3}));
  EXPECT_TRUE(NumpyGenerator(1).Permutation(0).empty());
  EXPECT_EQ(NumpyGenerator(1).Permutation(1), (std::vector<int64_t>{0}));
}

TEST(SplitRows, EqualsHfDatasetsTwoCalls) {
  // ds = Dataset.from_dict({"i": range(10)}); a = ds.train_test_split(test_size=0.2, seed=42)
  // b = a["test"].train_test_split(test_size=0.5, seed=42): train a["train"], val b["train"], test b["test"]
  auto s = SplitRows(10, {.train = 8, .val = 1, .test = 1}, 42);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->train, (std::vector<int64_t>{0, 7, 3, 2, 4, 9, 1, 8}));
  EXPECT_EQ(s->val, (std::vector<int64_t>{5}));
  EXPECT_EQ(s->test, (std::vector<int64_t>{6}));
}

TEST(SplitRows, EveryRowLandsInExactlyOnePart) {
  auto s = SplitRows(1001, {.train = 8, .val = 1, .test = 1}, 3);
  ASSERT_TRUE(s.ok());
  std::vector<int64_t> all = s->train;
  all.insert(all.end(), s->val.begin(), s->val.end());
  all.insert(all.end(), s->test.begin(), s->test.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), 1001u);
  for (int64_t i = 0; i < 1001; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], i);
  EXPECT_EQ(s->train.size(), 1001u - 201u);  // held out: ceil(0.2 * 1001) = 201
}

TEST(SplitRows, TwoPartsLeaveTheOtherEmpty) {
  auto s = SplitRows(10, {.train = 9, .val = 1, .test = 0}, 42);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->val.size(), 1u);
  EXPECT_TRUE(s->test.empty());
}

TEST(SplitRows, RefusesTooFewRows) {
  auto s = SplitRows(1, {.train = 8, .val = 1, .test = 1}, 42);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("leaves a part empty"), std::string::npos) << s.status().message();
  EXPECT_FALSE(SplitRows(0, {}, 42).ok());
}

TEST(ParseSplitRatios, ReadsTwoOrThreeParts) {
  auto r = ParseSplitRatios("8:1:1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->train, 8);
  EXPECT_EQ(r->test, 1);
  r = ParseSplitRatios("0.9:0.1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->test, 0);
}

TEST(ParseSplitRatios, RefusesMalformedRatios) {
  for (const char* bad : {"", "8", "8:1:1:1", "a:1:1", "8:-1:1", "0:1:1", "8:0:0", "8::1", "8:1:1x"}) {
    auto r = ParseSplitRatios(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("split ratios"), std::string::npos) << r.status().message();
    }
  }
}

}  // namespace
}  // namespace anneal::data
