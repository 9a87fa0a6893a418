// Text generation with the KV cache: greedy by default, or sampling with temperature / top-k / top-p.
//
// Matches HF generate's greedy decoding token for token (tests/parity). Sampling is deterministic for a seed.
//
// Thread-safety: uses the model; one thread at a time.
//
// Example:
//   GenerateOptions o; o.max_new_tokens = 32;
//   ASSIGN_OR_RETURN(std::vector<int64_t> ids, Generate(lm, {1, 2, 3}, o));
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/status.h"
#include "trainer/model/decoder.h"

namespace anneal::model {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
  std::vector<int64_t> stop_token_ids;  // generation ends after emitting one of these
  int64_t min_new_tokens = 0;           // stop tokens are forbidden before this many (HF's min_new_tokens)
};

// Returns only the new tokens.
StatusOr<std::vector<int64_t>> Generate(CausalLM& lm, const std::vector<int64_t>& prompt,
                                        const GenerateOptions& options);

}  // namespace anneal::model
