// From a job's data settings to tokenized, cached, split training examples: the one call the trainer makes.
//
// PrepareSftData: loads the tokenizer (model dir), applies the chat template's token fixes, loads and
// concatenates the datasets, encodes every conversation on `threads` threads (SFT masking and cutoff as
// LLaMA-Factory), and stores the result in the tokenized cache keyed by a hash of tokenizer.json + config,
// the template, each data file's checksum and every option that changes tokens. Later calls (other ranks,
// restarted attempts) open the cache without tokenizing. The train/val split is computed over cache rows.
// Progress is reported through the callback (stage name, done, total; total is -1 while a bounded-memory build
// does not know it yet). Files larger than memory: stages sft, pt, dpo and rm build the cache a chunk at a time
// (DataConfig::bounded_memory, stream.h); the trainer reads the cache through its memory mapping.
//
// Ownership: PreparedData shares the tokenizer and the cache (shared_ptr); rows index into that cache.
// Thread-safety: PrepareSftData may run in several processes at once (the cache lock serializes building).
//
// Example:
//   DataConfig c; c.tokenizer_dir = model_dir; c.template_name = "qwen"; c.datasets = {"alpaca_en_demo"};
//   c.cache_dir = "/shared/.anneal-cache";
//   ASSIGN_OR_RETURN(PreparedData d, PrepareSftData(c, [](std::string_view s, int64_t n, int64_t t) {}));
//   auto ids = d.cache->input_ids(d.train[0]);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "trainer/data/chat_template.h"
#include "trainer/data/dataset.h"
#include "trainer/data/pretrain.h"
#include "trainer/data/sft.h"
#include "trainer/data/token_cache.h"
#include "trainer/data/tokenizer.h"

namespace anneal::data {

struct DataConfig {
  std::string tokenizer_dir;
  std::string template_name = "default";
  std::vector<std::string> datasets;
  std::string dataset_dir = "data";
  SftOptions sft;
  // Stage pt (trainer/data/pretrain.h): raw text, no chat template, grouped into blocks. The template still
  // fixes the tokenizer (its eos), as in LLaMA-Factory. sft's options other than cutoff_len do not apply.
  bool pretrain = false;
  bool pretrain_packing = true;
  // Stage dpo: ranking datasets encoded as (chosen, rejected) pairs (pairwise.h); every pair is two cache rows.
  bool pairwise = false;
  // Stage kto: kto_tag datasets encoded with their KL completions (feedback.h); every example is three cache rows.
  // preprocessing_batch_size and _num_workers place the KL rotation, as LLaMA-Factory's map batches.
  bool kto = false;
  int preprocessing_batch_size = 1000;
  int preprocessing_num_workers = 1;
  std::optional<int64_t> max_samples;
  std::string mix_strategy = "concat";   // dataset.h / mix.h
  std::vector<double> interleave_probs;  // empty: round-robin interleave
  double val_size = 0.0;
  bool skip_bad_rows = false;
  std::string cache_dir;  // empty: no cache (encode in memory)
  uint64_t seed = 42;
  int threads = 0;  // 0: hardware concurrency
  double cache_wait_timeout_s = 1800;
  // Bounded memory (stream.h): stages sft, pt and dpo/rm read, encode and write the cache stream_chunk_rows
  // conversations at a time (pt with packing: whole preprocessing batches; with preprocessing_num_workers > 1
  // after a counting pass), so peak memory does not grow with the files; the cache is byte for byte the one
  // loading everything first would write. Stage kto, split slices and num_samples load every row first.
  // false: always load everything first (tests compare the two).
  bool bounded_memory = true;
  int stream_chunk_rows = 4096;
};

using ProgressFn = std::function<void(std::string_view stage, int64_t done, int64_t total)>;

// Encodes conversations (or passes pre-tokenized rows through, cut to cutoff_len). Rows that cannot be
// encoded are errors naming their origin, or skipped and counted with skip_bad_rows.
StatusOr<std::vector<SftExample>> EncodeConversations(const ChatTemplate& t, const Tokenizer& tok,
                                                      const std::vector<Conversation>& rows, const SftOptions& o,
                                                      bool skip_bad_rows, int threads, LoadReport* report,
                                                      const ProgressFn& progress = {});

// Stage dpo: each ranking row encoded as a pair (pairwise.h), returned as two examples, chosen then rejected.
StatusOr<std::vector<SftExample>> EncodePairs(const ChatTemplate& t, const Tokenizer& tok,
                                              const std::vector<Conversation>& rows, int cutoff_len, bool skip_bad_rows,
                                              int threads, LoadReport* report, const ProgressFn& progress = {});

// Stage kto: each tagged row encoded with its KL completion (feedback.h), returned as three examples: the target,
// the KL row, and the tag row (one token, 1 for a desirable answer). A row that fails to encode is an error, or
// skipped with skip_bad_rows after the KL completions are assigned (as LLaMA-Factory drops invalid examples).
StatusOr<std::vector<SftExample>> EncodeFeedbackRows(const ChatTemplate& t, const Tokenizer& tok,
                                                     const std::vector<Conversation>& rows, const DataConfig& c,
                                                     LoadReport* report, const ProgressFn& progress = {});

struct PreparedData {
  std::shared_ptr<Tokenizer> tokenizer;
  ChatTemplate chat_template;
  std::shared_ptr<TokenCache> cache;  // every example, tokenized
  std::vector<int64_t> train, val;    // cache row indices (pairwise: the chosen rows; rejected = chosen + 1)
  bool pairwise = false;
  bool kto = false;   // train / val index the target rows; the KL row and the tag row follow each
  LoadReport report;  // rows read and skipped: filled only by the process that built the cache
  std::string cache_key;
  bool streamed = false;  // the cache was (or would have been) built by the bounded-memory path
};

// With config.pretrain the cache holds stage pt examples (blocks, or one cut text per row without packing).
StatusOr<PreparedData> PrepareSftData(const DataConfig& config, const ProgressFn& progress = {});

// Stage pt: each row's text (its first message) encoded, eos appended, grouped (pretrain.h).
StatusOr<std::vector<SftExample>> EncodePretrainTexts(const Tokenizer& tok, std::string_view template_name,
                                                      const std::vector<Conversation>& rows, const DataConfig& c,
                                                      const ProgressFn& progress = {});

}  // namespace anneal::data
