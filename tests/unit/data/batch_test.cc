#include "trainer/data/batch.h"

#include <gtest/gtest.h>

#include "tests/unit/data/test_dir.h"
#include "trainer/data/sft.h"

namespace anneal::data {
namespace {

using testing::TempDir;

std::shared_ptr<TokenCache> MakeCache(const TempDir& d) {
  auto c = TokenCache::OpenOrBuild(d.path(), CacheKey({"batch"}), "", [](TokenCacheWriter& w) -> Status {
    RETURN_IF_ERROR(w.Add(std::vector<int32_t>{1, 2, 3}, std::vector<int32_t>{-100, 2, 3}));
    RETURN_IF_ERROR(w.Add(std::vector<int32_t>{4, 5}, std::vector<int32_t>{4, 5}));
    return w.Add(std::vector<int32_t>{6, 7, 8, 9}, std::vector<int32_t>{-100, -100, 8, 9});
  });
  EXPECT_TRUE(c.ok());
  return *c;
}

TEST(Batch, PadBatchRightPads) {
  TempDir d;
  auto cache = MakeCache(d);
  std::vector<int64_t> rows = {1, 0};
  Batch b = PadBatch(*cache, rows, /*pad_id=*/99);
  ASSERT_EQ(b.rows, 2);
  ASSERT_EQ(b.seq_len, 3);
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{4, 5, 99, 1, 2, 3}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{4, 5, kIgnoreIndex, -100, 2, 3}));
  EXPECT_EQ(b.attention_mask, (std::vector<int32_t>{1, 1, 0, 1, 1, 1}));
}

TEST(Batch, PaddingFreeRestartsPositions) {
  TempDir d;
  auto cache = MakeCache(d);
  std::vector<int64_t> rows = {0, 1};
  Batch b = PaddingFreeBatch(*cache, rows);
  EXPECT_EQ(b.rows, 1);
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(b.position_ids, (std::vector<int32_t>{0, 1, 2, 0, 1}));
  EXPECT_EQ(b.segment_ids, (std::vector<int32_t>{1, 1, 1, 2, 2}));
}

TEST(Batch, PackedRowsMatchPackExamples) {
  TempDir d;
  auto cache = MakeCache(d);
  std::vector<int64_t> rows = {0, 1, 2};
  auto bins = PackRows(*cache, rows, 6);
  Batch b = PackedBatch(*cache, bins, 6, 0);
  std::vector<SftExample> ex;
  for (int64_t r : rows) {
    auto ids = cache->input_ids(r);
    auto labels = cache->labels(r);
    ex.push_back({{ids.begin(), ids.end()}, {labels.begin(), labels.end()}});
  }
  auto packs = PackExamples(ex, 6, 0);
  ASSERT_EQ(static_cast<size_t>(b.rows), packs.size());
  for (int r = 0; r < b.rows; ++r) {
    std::vector<int32_t> row(b.input_ids.begin() + r * b.seq_len, b.input_ids.begin() + (r + 1) * b.seq_len);
    EXPECT_EQ(row, packs[r].input_ids);
    std::vector<int32_t> seg(b.segment_ids.begin() + r * b.seq_len, b.segment_ids.begin() + (r + 1) * b.seq_len);
    EXPECT_EQ(seg, packs[r].segment_ids);
  }
}

}  // namespace
}  // namespace anneal::data
