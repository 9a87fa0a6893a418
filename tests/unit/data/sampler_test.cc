#include "trainer/data/sampler.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

namespace anneal::data {
namespace {

TEST(Sampler, PermutationIsDeterministicAndComplete) {
  auto a = ShuffledIndices(1000, 42, 0);
  auto b = ShuffledIndices(1000, 42, 0);
  EXPECT_EQ(a, b);
  std::set<int64_t> all(a.begin(), a.end());
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_NE(a, ShuffledIndices(1000, 42, 1));  // a new epoch reshuffles
  EXPECT_NE(a, ShuffledIndices(1000, 43, 0));  // another seed differs
  std::vector<int64_t> identity(1000);
  for (int i = 0; i < 1000; ++i) identity[i] = i;
  EXPECT_NE(a, identity);
  EXPECT_EQ(ShuffledIndices(1000, 42, 0, /*shuffle=*/false), identity);
}

TEST(Sampler, FixedGeneratorGivesKnownValues) {
  // splitmix64 reference values (seed 0): the order never depends on the standard library.
  SplitMix64 r(0);
  EXPECT_EQ(r.Next(), 0xe220a8397b1dcdafull);
  EXPECT_EQ(r.Next(), 0x6e789e6aa1b965f4ull);
}

TEST(Sampler, GlobalBatchesAreTheSameWhateverDataParallelSize) {
  Sampler s(97, 7);
  const int global_batch = 12;
  for (int64_t consumed = 0; consumed < 400; consumed += global_batch) {
    std::multiset<int64_t> reference;
    for (int dp : {1, 2, 3, 4, 6}) {
      std::multiset<int64_t> batch;
      for (int r = 0; r < dp; ++r)
        for (int64_t i : s.RankBatch(consumed, r, dp, global_batch / dp)) batch.insert(i);
      if (dp == 1) reference = batch;
      EXPECT_EQ(batch, reference) << "dp=" << dp << " consumed=" << consumed;
    }
  }
}

TEST(Sampler, ResumesExactlyFromConsumedSamples) {
  Sampler first(50, 3);
  std::vector<int64_t> straight;
  for (int64_t c = 0; c < 160; c += 8) {
    auto b = first.RankBatch(c, 1, 2, 4);
    straight.insert(straight.end(), b.begin(), b.end());
  }
  // A "restarted" sampler picking up at consumed = 80 replays the same tail.
  Sampler restarted(50, 3);
  std::vector<int64_t> tail;
  for (int64_t c = 80; c < 160; c += 8) {
    auto b = restarted.RankBatch(c, 1, 2, 4);
    tail.insert(tail.end(), b.begin(), b.end());
  }
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), straight.begin() + 40));
}

TEST(Sampler, EachEpochVisitsEverySampleOnce) {
  Sampler s(30, 11);
  std::vector<int> seen(30, 0);
  for (int64_t p = 30; p < 60; ++p) ++seen[s.IndexAt(p)];
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
}

}  // namespace
}  // namespace anneal::data
