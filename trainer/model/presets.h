// Architecture presets for `anneal-train model init`: random models in HF format for tests, demos and benches.
//
//   tiny  : hidden 64,   2 layers,  4 heads (2 kv),  intermediate 176   (unit and parity tests)
//   small : hidden 256,  4 layers,  8 heads (4 kv),  intermediate 688   (the CPU demo and CPU benchmarks)
//   1b    : hidden 2048, 16 layers, 32 heads (8 kv), intermediate 8192  (LLaMA-3.2-1B shape; GPU benchmarks)
// Per architecture: llama (llama3 rope scaling on 1b), qwen2 (q/k/v biases, tied embeddings on tiny/small),
// mistral (sliding window 4096).
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "common/status.h"
#include "trainer/model/config.h"

namespace anneal::model {

StatusOr<ModelConfig> PresetConfig(const std::string& arch, const std::string& preset, int64_t vocab_size);

// Vocabulary size and special token ids read from a tokenizer directory (tokenizer.json [+ tokenizer_config.json]),
// so a generated model fits the tokenizer it is shipped with.
struct TokenizerFacts {
  int64_t vocab_size = 0;
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;
};
StatusOr<TokenizerFacts> ReadTokenizerFacts(const std::string& tokenizer_dir);

}  // namespace anneal::model
