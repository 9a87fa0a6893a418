// Tokenizer: an HF tokenizer.json (BPE with ByteLevel or Metaspace/SentencePiece-style pre-processing) loaded
// into C++, producing the same token ids as huggingface/tokenizers.
//
// Encoding: invalid UTF-8 is repaired (U+FFFD per maximal invalid subpart); added tokens that are not
// "normalized" are matched first on the raw text (leftmost-longest), the rest is normalized, then "normalized"
// added tokens are matched, then pre-tokenized into words, each word BPE-encoded (a word cache shared by the threads).
// add_special_tokens runs the post-processor (TemplateProcessing's single sequence, e.g. LLaMA-3's BOS).
// Decoding: ids -> tokens (added tokens included unless skip_special_tokens) -> decoder chain -> text.
//
// Special token names (bos/eos/pad) come from tokenizer_config.json / special_tokens_map.json next to
// tokenizer.json when present. AddSpecialToken / SetEosToken mirror transformers' add_special_tokens (used by
// chat templates that replace EOS): they give a new id past the vocab when the token is unknown.
//
// Ownership: Load returns a shared_ptr; the Tokenizer owns its model, pipeline stages and word cache.
// Thread-safety: Encode/Decode/EncodeBatch are const and safe from many threads. AddSpecialToken and
// SetEosToken mutate: call them before sharing the tokenizer.
//
// Example:
//   ASSIGN_OR_RETURN(auto tok, anneal::data::Tokenizer::Load("/models/qwen2"));
//   ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode("Hello world"));
//   std::string text = tok->Decode(ids);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "trainer/data/bpe.h"
#include "trainer/data/text_pipeline.h"

namespace anneal::data {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

class Tokenizer {
 public:
  // path: a directory holding tokenizer.json (and optionally tokenizer_config.json), or the json file itself.
  static StatusOr<std::shared_ptr<Tokenizer>> Load(const std::string& path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  // From the text of a tokenizer.json (`source` names it in errors) and an optional tokenizer_config.json text.
  static StatusOr<std::shared_ptr<Tokenizer>> FromJsonText(std::string_view json_text, const std::string& source,
                                                           std::string_view config_text = {});

  StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens = false) const;
  // Encodes texts on `threads` threads (0: hardware concurrency). Results are in input order.
  StatusOr<std::vector<std::vector<int32_t>>> EncodeBatch(const std::vector<std::string>& texts, int threads,
                                                          bool add_special_tokens = false) const;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Empty when unknown.
  std::string IdToToken(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  // Number of ids (vocab plus added tokens).
  int32_t vocab_size() const;

  // transformers' add_special_tokens: an existing token is marked special (and matched before splitting);
  // an unknown one is added with the next free id. Returns the id.
  int32_t AddSpecialToken(const std::string& content);
  void SetEosToken(const std::string& content) { eos_token_ = content; eos_id_ = AddSpecialToken(content); }
  void SetPadToken(const std::string& content) { pad_token_ = content; pad_id_ = AddSpecialToken(content); }

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }
  // Hash of tokenizer.json, the config and every added token (keys the tokenized cache).
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  Tokenizer();
  struct Matcher;    // added-token trie
  struct WordCache;  // pre-token word -> ids
  struct Segment { std::string_view text; int32_t added_id; size_t offset; };
  void RebuildMatchers();
  void SplitAdded(std::string_view text, size_t base, const Matcher& m, std::vector<Segment>* out) const;
  Status EncodePlain(std::string_view text, bool at_origin, std::vector<int32_t>* out) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;

  BpeModel model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  bool byte_level_ = false;
  bool split_at_word_starts_ = false;  // SentencePiece-style vocab: BPE words may be cut before each "▁"
  std::vector<AddedToken> added_;
  TokenMap added_by_content_;
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::shared_ptr<const Matcher> raw_matcher_, normalized_matcher_;
  std::vector<int32_t> post_prefix_, post_suffix_;
  std::string bos_token_, eos_token_, pad_token_;
  std::optional<int32_t> bos_id_, eos_id_, pad_id_;
  uint64_t fingerprint_ = 0;
  std::unique_ptr<WordCache> word_cache_;
};

// FNV-1a 64 over bytes, chained from `seed` (stable across platforms and runs).
uint64_t Fnv1a64(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ull);

}  // namespace anneal::data
