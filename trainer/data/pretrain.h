// Pre-training examples (stage pt) built as LLaMA-Factory's PretrainDatasetProcessor does (processor/pretrain.py,
// v0.9.5): each row's text (the first prompt message: alpaca's prompt column, e.g. dataset_info.json
// "columns": {"prompt": "text"}) gets the end-of-sequence token appended ("<|end_of_text|>" for template llama3,
// else the tokenizer's eos after the template's fixes), no chat template. Without packing each text is cut to
// cutoff_len. With packing (the pt default) the rows are split
// into `num_shards` contiguous shards (datasets.map(num_proc)), each shard into groups of `batch_size` rows (the
// map batch), and each group's token ids are concatenated and cut into blocks of cutoff_len, the remainder of
// the group dropped. No bos is added: LLaMA-Factory adds one only when the tokenizer's add_bos_token attribute
// is set, and transformers 5 drops add_bos_token from tokenizer_config.json when tokenizer.json exists (the only
// tokenizers the trainer loads). Labels are the inputs except where the token is the pad token (-100), as
// LLaMA-Factory's DataCollatorForLanguageModeling sets them.
//
// Ownership: values in, values out. Thread-safety: pure functions.
//
// Example:
//   PretrainOptions o; o.cutoff_len = 1024; o.pad_id = tok->pad_id();
//   std::vector<SftExample> blocks = GroupPretrainTexts(texts_ids, o);
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "trainer/data/sft.h"

namespace anneal::data {

struct PretrainOptions {
  int cutoff_len = 2048;
  bool packing = true;
  int batch_size = 1000;          // LLaMA-Factory's preprocessing_batch_size
  int num_shards = 1;             // LLaMA-Factory's preprocessing_num_workers
  std::optional<int32_t> pad_id;  // labels are -100 where the input is this token
};

// [lo, hi) of shard `index` of `n` rows in `shards` contiguous shards (HF datasets' shard(contiguous=True)).
std::pair<int64_t, int64_t> ContiguousShard(int64_t n, int shards, int index);

// `texts`: the token ids of each row's text with eos already appended. Returns the examples in order.
std::vector<SftExample> GroupPretrainTexts(const std::vector<std::vector<int32_t>>& texts, const PretrainOptions& o);

}  // namespace anneal::data
