// Supervised fine-tuning examples: token ids with labels (-100 where no loss), built exactly as
// LLaMA-Factory's SupervisedDatasetProcessor does (processor/supervised.py, v0.9.5): per-turn prompt masking,
// train_on_prompt, mask_history (only the last turn trained, turns kept from the end), efficient_eos, and
// cutoff_len truncation through infer_seqlen. Packing: LLaMA-Factory's greedy knapsack (largest example that
// still fits, ascending lengths), with per-example position ids restarting at 0 and segment ids (1, 2, ...;
// 0 for padding) so attention stays inside each example ("neat packing"); padding-free batches concatenate
// examples without padding, with the same position and segment ids.
//
// Plain C++ structures: the trainer turns them into tensors.
//
// Ownership: values in, values out; the tokenizer and template are borrowed.
// Thread-safety: pure functions.
//
// Example:
//   SftOptions o; o.cutoff_len = 1024;
//   ASSIGN_OR_RETURN(SftExample ex, EncodeSupervised(tmpl, *tok, messages, system, o));
//   std::vector<PackedSequence> packs = PackExamples(examples, o.cutoff_len, pad_id);
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "trainer/data/chat_template.h"

namespace anneal::data {

inline constexpr int32_t kIgnoreIndex = -100;

struct SftOptions {
  int cutoff_len = 2048;
  bool train_on_prompt = false;
  bool mask_history = false;
};

struct SftExample {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // kIgnoreIndex where no loss
};

// LLaMA-Factory's infer_seqlen: (new source length, new target length) within cutoff_len.
std::pair<int, int> InferSeqlen(int source_len, int target_len, int cutoff_len);

// messages: prompt turns then one assistant answer (an odd number of prompt messages before it).
StatusOr<SftExample> EncodeSupervised(const ChatTemplate& t, const Tokenizer& tok, const std::vector<Message>& messages,
                                      std::string_view system, const SftOptions& options);

// Pre-training style example: ids with labels equal to ids (used for pre-tokenized rows without labels).
SftExample FromTokens(std::vector<int32_t> ids, std::vector<int32_t> labels = {});

// A packed (or padding-free) sequence: several examples back to back.
struct PackedSequence {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;
  std::vector<int32_t> position_ids;  // restart at 0 for every example; 0 on padding
  std::vector<int32_t> segment_ids;   // 1..k for the k examples; 0 on padding
  std::vector<int64_t> example_indices;  // which inputs were packed, in order
};

// LLaMA-Factory's greedy_knapsack over example lengths: bins of example indices, each bin's total length
// <= cutoff_len; examples longer than cutoff_len are left out. Works on cache rows without copying tokens.
std::vector<std::vector<int64_t>> GreedyKnapsackBins(std::span<const int64_t> lengths, int cutoff_len);

// LLaMA-Factory packing: drops examples longer than cutoff_len, greedy knapsack of lengths into bins of
// cutoff_len, each bin padded to cutoff_len + 1 with pad_id (labels -100). Deterministic for a given input.
std::vector<PackedSequence> PackExamples(std::span<const SftExample> examples, int cutoff_len, int32_t pad_id);

// Padding-free batch: the examples concatenated in order, no padding.
PackedSequence ConcatPaddingFree(std::span<const SftExample* const> examples);

}  // namespace anneal::data
