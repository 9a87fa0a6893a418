#include "trainer/data/mix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "trainer/data/numpy_random.h"

namespace anneal::data {
namespace {

// Golden values printed by numpy 2.4 (np.random.seed(42); permutation(10); choice(10, 5) and default_rng).
TEST(NumpyRandom, LegacyStreamMatchesNumpy) {
  NumpyLegacyRandom r(42);
  EXPECT_EQ(r.Permutation(10), (std::vector<int64_t>{8, 1, 5, 0, 7, 2, 9, 4, 3, 6}));
  EXPECT_EQ(r.Choice(10, 5), (std::vector<int64_t>{2, 6, 7, 4, 3}));
}

TEST(NumpyRandom, GeneratorMatchesDefaultRng) {
  NumpyGenerator g(42);
  EXPECT_DOUBLE_EQ(g.Random(), 0.7739560485559633);
  EXPECT_DOUBLE_EQ(g.Random(), 0.4388784397520523);
  EXPECT_DOUBLE_EQ(g.Random(), 0.8585979199113825);
  NumpyGenerator c(7);
  EXPECT_EQ(c.Choice(3, 12, {0.5, 0.3, 0.2}), (std::vector<int64_t>{1, 2, 1, 0, 0, 2, 0, 2, 1, 0, 0, 0}));
  NumpyGenerator wide((uint64_t{1} << 40) + 5);  // a seed of two 32-bit words
  EXPECT_NEAR(wide.Random(), 0.00473946, 1e-8);
}

// The examples in HF datasets' _interleave_map_style_datasets comments, lengths [3, 4, 5].
TEST(MixIndices, RoundRobinAsHfDatasets) {
  auto under = MixIndices({3, 4, 5}, "interleave_under", {}, 0);
  ASSERT_TRUE(under.ok()) << under.status().message();
  EXPECT_EQ(*under, (std::vector<int64_t>{0, 3, 7, 1, 4, 8, 2, 5, 9}));
  auto over = MixIndices({3, 4, 5}, "interleave_over", {}, 0);
  ASSERT_TRUE(over.ok());
  EXPECT_EQ(*over, (std::vector<int64_t>{0, 3, 7, 1, 4, 8, 2, 5, 9, 0, 6, 10, 1, 3, 11}));
  auto once = MixIndices({3, 4, 5}, "interleave_once", {}, 0);
  ASSERT_TRUE(once.ok());
  EXPECT_EQ(*once, (std::vector<int64_t>{0, 3, 7, 1, 4, 8, 2, 5, 9, 6, 10, 11}));
}

TEST(MixIndices, ConcatAndSingleDatasetKeepOrder) {
  auto concat = MixIndices({2, 3}, "concat", {}, 0);
  ASSERT_TRUE(concat.ok());
  EXPECT_EQ(*concat, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  auto single = MixIndices({4}, "interleave_over", {1.0}, 9);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(*single, (std::vector<int64_t>{0, 1, 2, 3}));
}

int64_t Source(int64_t index, const std::vector<int64_t>& lengths) {
  for (size_t d = 0, offset = 0; d < lengths.size(); offset += lengths[d], ++d)
    if (index < static_cast<int64_t>(offset) + lengths[d]) return static_cast<int64_t>(d);
  return -1;
}

TEST(MixIndices, UnderStopsRightAfterTheFirstSourceIsExhausted) {
  std::vector<int64_t> lengths = {5, 8, 3};
  auto idx = MixIndices(lengths, "interleave_under", {0.2, 0.5, 0.3}, 42);
  ASSERT_TRUE(idx.ok());
  std::vector<int64_t> counts(3, 0);
  for (int64_t i : *idx) ++counts[Source(i, lengths)];
  int64_t last = Source(idx->back(), lengths);
  EXPECT_EQ(counts[last], lengths[last]);  // the last row taken exhausted its source
  for (int d = 0; d < 3; ++d) EXPECT_LE(counts[d], lengths[d]);
  EXPECT_EQ(*MixIndices(lengths, "interleave_under", {0.2, 0.5, 0.3}, 42), *idx);  // per-seed determinism
  EXPECT_NE(*MixIndices(lengths, "interleave_under", {0.2, 0.5, 0.3}, 43), *idx);
}

TEST(MixIndices, OverTakesEveryRowAndOnceTakesEachExactlyOnce) {
  std::vector<int64_t> lengths = {5, 8, 3};
  auto over = MixIndices(lengths, "interleave_over", {0.2, 0.5, 0.3}, 7);
  ASSERT_TRUE(over.ok());
  for (int64_t row = 0; row < 16; ++row) EXPECT_NE(std::find(over->begin(), over->end(), row), over->end()) << row;
  auto once = MixIndices(lengths, "interleave_once", {0.2, 0.5, 0.3}, 7);
  ASSERT_TRUE(once.ok());
  std::vector<int64_t> sorted = *once, all(16);
  std::sort(sorted.begin(), sorted.end());
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(sorted, all);
}

TEST(MixIndices, RefusalsNameTheProblem) {
  auto msg = [](const StatusOr<std::vector<int64_t>>& r) { return r.ok() ? std::string("ok") : r.status().message(); };
  EXPECT_NE(msg(MixIndices({1, 2}, "shuffle", {}, 0)).find("mix_strategy 'shuffle'"), std::string::npos);
  EXPECT_NE(msg(MixIndices({1, 2}, "concat", {0.5, 0.5}, 0)).find("only valid with an interleave"), std::string::npos);
  EXPECT_NE(msg(MixIndices({1, 2}, "interleave_under", {1.0}, 0)).find("1 probabilities for 2 datasets"),
            std::string::npos);
  EXPECT_NE(msg(MixIndices({1, 2}, "interleave_under", {0.5, 0.6}, 0)).find("not 1"), std::string::npos);
  EXPECT_NE(msg(MixIndices({1, 2}, "interleave_under", {-0.5, 1.5}, 0)).find(">= 0"), std::string::npos);
  EXPECT_NE(msg(MixIndices({0, 2}, "interleave_under", {0.5, 0.5}, 0)).find("dataset 0 is empty"), std::string::npos);
  EXPECT_NE(msg(MixIndices({1, 2}, "interleave_over", {0.0, 1.0}, 0)).find("could never exhaust"), std::string::npos);
  EXPECT_TRUE(MixIndices({1, 2}, "interleave_under", {0.0, 1.0}, 0).ok());  // HF allows it: never drawn
}

}  // namespace
}  // namespace anneal::data
