// Micro-batches as tensors, from tokenized examples (trainer/data).
//
//   padded : rows padded on the right to the longest row: input_ids [B, T], labels [B, T] (-100 on padding and
//            masked prompt tokens), attention_mask [B, T].
//   packed : rows that are already packed sequences (data::PackExamples): position_ids restart per example and,
//            with neat packing, segment_ids confine attention to each example.
// Labels are not shifted here (CausalLM's loss uses ShiftLabels, as HF shifts inside the loss).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <ATen/core/Tensor.h>

namespace anneal::train {

struct Batch {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor labels;          // [B, T] int64
  at::Tensor attention_mask;  // [B, T] int64, undefined for packed batches
  at::Tensor position_ids;    // [B, T] int64, packed only
  at::Tensor segment_ids;     // [B, T] int64, neat packing only
  int64_t label_tokens = 0;   // labels != -100 after the shift: the loss's denominator share
  int64_t input_tokens = 0;   // non-padding tokens
};

struct Row {
  std::span<const int32_t> input_ids, labels, position_ids, segment_ids;  // the last two may be empty
};

Batch Collate(const std::vector<Row>& rows, int32_t pad_id, bool neat_packing);

}  // namespace anneal::train
