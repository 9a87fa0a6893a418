// Batches from the tokenized cache, as plain row-major int32 arrays the trainer copies into tensors.
//
//   PadBatch:         rows right-padded to the longest row (pad_id, labels -100, attention_mask 0,
//                     position_ids 0..len-1 then 0) — the ordinary batch
//   PaddingFreeBatch: one row, the examples back to back, position_ids restarting per example and
//                     segment_ids 1..k (attention confined to each example; no padding at all)
//   PackRows + PackedBatch: LLaMA-Factory packing over cache rows (greedy knapsack into cutoff_len bins);
//                     the sampler then runs over bins instead of rows
//
// Ownership: a Batch owns its arrays (copies of the cache rows).
// Thread-safety: pure functions over an immutable TokenCache.
//
// Example:
//   std::vector<int64_t> rows = sampler.RankBatch(consumed, rank, dp, micro_batch);
//   for (auto& r : rows) r = prepared.train[r];          // sampler positions -> cache rows
//   Batch b = PadBatch(*prepared.cache, rows, *prepared.tokenizer->pad_id());
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "trainer/data/token_cache.h"

namespace anneal::data {

struct Batch {
  int rows = 0;
  int seq_len = 0;
  // Each rows * seq_len, row-major.
  std::vector<int32_t> input_ids, labels, attention_mask, position_ids, segment_ids;
};

Batch PadBatch(const TokenCache& cache, std::span<const int64_t> rows, int32_t pad_id);
Batch PaddingFreeBatch(const TokenCache& cache, std::span<const int64_t> rows);

// Bins of cache rows (only `rows` are considered), each bin's total length <= cutoff_len; rows longer than
// cutoff_len are left out.
std::vector<std::vector<int64_t>> PackRows(const TokenCache& cache, std::span<const int64_t> rows, int cutoff_len);
// One packed row of cutoff_len + 1 tokens (as LLaMA-Factory) per bin; segment_ids 0 and attention_mask 0 on
// padding.
Batch PackedBatch(const TokenCache& cache, std::span<const std::vector<int64_t>> bins, int cutoff_len, int32_t pad_id);

}  // namespace anneal::data
