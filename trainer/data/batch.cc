#include "trainer/data/batch.h"

#include <algorithm>

#include "trainer/data/sft.h"

namespace anneal::data {

namespace {
void Resize(Batch* b) {
  size_t n = static_cast<size_t>(b->rows) * b->seq_len;
  b->input_ids.assign(n, 0);
  b->labels.assign(n, kIgnoreIndex);
  b->attention_mask.assign(n, 0);
  b->position_ids.assign(n, 0);
  b->segment_ids.assign(n, 0);
}

// Writes the cache rows back to back into row `r` of b starting at column 0; returns the next column.
int Place(const TokenCache& cache, std::span<const int64_t> rows, int r, Batch* b) {
  int col = 0;
  int32_t segment = 0;
  for (int64_t row : rows) {
    auto ids = cache.input_ids(row);
    auto labels = cache.labels(row);
    ++segment;
    ANNEAL_CHECK(col + static_cast<int>(ids.size()) <= b->seq_len);  // a bin longer than the row is a caller bug
    for (size_t k = 0; k < ids.size(); ++k, ++col) {
      size_t at = static_cast<size_t>(r) * b->seq_len + col;
      b->input_ids[at] = ids[k];
      b->labels[at] = labels[k];
      b->attention_mask[at] = 1;
      b->position_ids[at] = static_cast<int32_t>(k);
      b->segment_ids[at] = segment;
    }
  }
  return col;
}
}  // namespace

Batch PadBatch(const TokenCache& cache, std::span<const int64_t> rows, int32_t pad_id) {
  Batch b;
  b.rows = static_cast<int>(rows.size());
  for (int64_t row : rows) b.seq_len = std::max(b.seq_len, static_cast<int>(cache.input_ids(row).size()));
  Resize(&b);
  std::fill(b.input_ids.begin(), b.input_ids.end(), pad_id);
  for (int r = 0; r < b.rows; ++r) Place(cache, rows.subspan(r, 1), r, &b);
  return b;
}

Batch PaddingFreeBatch(const TokenCache& cache, std::span<const int64_t> rows) {
  Batch b;
  b.rows = 1;
  for (int64_t row : rows) b.seq_len += static_cast<int>(cache.input_ids(row).size());
  Resize(&b);
  Place(cache, rows, 0, &b);
  return b;
}

std::vector<std::vector<int64_t>> PackRows(const TokenCache& cache, std::span<const int64_t> rows, int cutoff_len) {
  std::vector<int64_t> lengths;
  lengths.reserve(rows.size());
  for (int64_t row : rows) lengths.push_back(static_cast<int64_t>(cache.input_ids(row).size()));
  auto bins = GreedyKnapsackBins(lengths, cutoff_len);
  for (auto& bin : bins)
    for (auto& i : bin) i = rows[i];  // positions in `rows` -> cache rows
  return bins;
}

Batch PackedBatch(const TokenCache& cache, std::span<const std::vector<int64_t>> bins, int cutoff_len, int32_t pad_id) {
  Batch b;
  b.rows = static_cast<int>(bins.size());
  b.seq_len = cutoff_len + 1;
  Resize(&b);
  std::fill(b.input_ids.begin(), b.input_ids.end(), pad_id);
  for (int r = 0; r < b.rows; ++r) Place(cache, bins[r], r, &b);
  return b;
}

}  // namespace anneal::data
