#include "trainer/data/sft.h"

#include <gtest/gtest.h>

namespace anneal::data {
namespace {

TEST(InferSeqlen, MatchesLlamaFactoryCases) {
  EXPECT_EQ(InferSeqlen(10, 5, 100), std::make_pair(10, 5));     // fits
  EXPECT_EQ(InferSeqlen(300, 10, 100), std::make_pair(90, 10));  // truncate source
  EXPECT_EQ(InferSeqlen(10, 300, 100), std::make_pair(10, 90));  // truncate target
  EXPECT_EQ(InferSeqlen(60, 90, 100), std::make_pair(40, 60));   // both: int(100 * 90 / 150)
  EXPECT_EQ(InferSeqlen(5, 5, 0), std::make_pair(0, 0));
}

TEST(Packing, PositionIdsRestartAndSegmentsSeparateExamples) {
  std::vector<SftExample> ex = {FromTokens({1, 2, 3}), FromTokens({4, 5}), FromTokens({6, 7, 8, 9}),
                                FromTokens(std::vector<int32_t>(20, 1))};  // the last is too long: dropped
  auto packs = PackExamples(ex, 6, /*pad_id=*/0);
  ASSERT_EQ(packs.size(), 2u);
  size_t total_examples = 0;
  for (const auto& p : packs) {
    ASSERT_EQ(p.input_ids.size(), 7u);  // cutoff_len + 1, as LLaMA-Factory
    ASSERT_EQ(p.position_ids.size(), 7u);
    total_examples += p.example_indices.size();
    int32_t seg = 0;
    for (size_t k = 0; k < p.input_ids.size(); ++k) {
      if (p.segment_ids[k] == 0) {
        EXPECT_EQ(p.labels[k], kIgnoreIndex);
        continue;
      }
      if (p.segment_ids[k] != seg) {
        EXPECT_EQ(p.position_ids[k], 0) << "positions restart at every example";
        seg = p.segment_ids[k];
      }
    }
  }
  EXPECT_EQ(total_examples, 3u);
  // Greedy knapsack: largest that fits first -> {4-token, 2-token} then {3-token}.
  EXPECT_EQ(packs[0].example_indices, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(packs[1].example_indices, (std::vector<int64_t>{0}));
}

TEST(Packing, PaddingFreeConcatenatesWithoutPadding) {
  SftExample a = FromTokens({1, 2}), b = FromTokens({3, 4, 5});
  std::vector<const SftExample*> v = {&a, &b};
  PackedSequence p = ConcatPaddingFree(v);
  EXPECT_EQ(p.input_ids, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(p.position_ids, (std::vector<int32_t>{0, 1, 0, 1, 2}));
  EXPECT_EQ(p.segment_ids, (std::vector<int32_t>{1, 1, 2, 2, 2}));
}

}  // namespace
}  // namespace anneal::data
