// Micro-batches as tensors: trainer/data builds the token arrays (data::PadBatch, data::PackedBatch), this
// turns them into the model's inputs and counts the tokens the loss normalisation needs.
//
//   padded : input_ids [B, T], labels [B, T] (-100 on padding and masked prompt tokens), attention_mask [B, T]
//   packed : position_ids restart per example; with neat packing segment_ids confine attention to each example,
//            otherwise (LLaMA-Factory's plain packing) examples in a row see each other and only padding is masked.
// Labels are not shifted here (CausalLM's loss uses ShiftLabels, as HF shifts inside the loss).
//
// Thread-safety: pure functions.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "trainer/data/batch.h"

namespace anneal::train {

struct Batch {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor labels;          // [B, T] int64
  at::Tensor attention_mask;  // [B, T] int64; undefined with neat packing
  at::Tensor position_ids;    // [B, T] int64; packed only
  at::Tensor segment_ids;     // [B, T] int64; neat packing only
  at::Tensor kto_tags;        // [B / 2] bool; stage kto only: whether target row k's answer is desirable
  int64_t label_tokens = 0;   // labels != -100 after the shift: this micro-batch's share of the loss denominator
  int64_t input_tokens = 0;   // non-padding tokens
};

// `packed`: the rows are packing bins (position_ids restart per example).
Batch ToTensors(const data::Batch& b, bool packed, bool neat_packing);

// Pads the sequence dimension to a multiple of `multiple` (sequence parallelism splits it evenly): pad_id
// tokens, -100 labels, attention_mask 0, position 0, and a segment of their own. The loss and token counts do
// not change.
Batch PadSequenceTo(Batch b, int64_t multiple, int64_t pad_id);

}  // namespace anneal::train
