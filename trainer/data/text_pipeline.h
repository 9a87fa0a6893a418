// The text stages of an HF tokenizer.json, rebuilt in C++: normalizers, pre-tokenizers and decoders.
//
// Supported (the ones LLaMA-2/3, Mistral, Qwen2 and DeepSeek files use):
//   normalizers:     Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace (String or Regex), Strip
//   pre-tokenizers:  Sequence, Split (String or Regex; Isolated/Removed/MergedWithPrevious/MergedWithNext/
//                    Contiguous; invert), ByteLevel, Digits, Metaspace, Whitespace, WhitespaceSplit
//   decoders:        Sequence, ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace
// Anything else is an INVALID_ARGUMENT naming the JSON path ("pre_tokenizer.pretokenizers[2].type: ...").
// Regexes run through PCRE2 with UTF and UCP (Unicode \p{..} classes, Unicode \s), JIT-compiled.
//
// Semantics follow huggingface/tokenizers (normalizer.rs split behaviours, Metaspace prepend_scheme "first"
// only on the piece that starts the input, ByteLevel's GPT-2 regex, ByteFallback's U+FFFD per invalid byte).
//
// Ownership: builders return unique_ptr stages that the Tokenizer owns; Regex is shared (shared_ptr).
// Thread-safety: every stage is immutable after construction and safe to share across threads; per-thread
// PCRE2 match data is kept in thread_local storage.
//
// Example:
//   ASSIGN_OR_RETURN(auto pre, BuildPreTokenizer(json["pre_tokenizer"], "pre_tokenizer"));
//   std::vector<Word> words = {{"Hello world", true}};
//   RETURN_IF_ERROR(pre->Apply(&words));
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace anneal::data {

// A compiled PCRE2 pattern (UTF + UCP, JIT when available).
class Regex {
 public:
  static StatusOr<std::shared_ptr<Regex>> Compile(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches, left to right, as [begin, end) byte offsets. Empty matches are skipped.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  std::string pattern_;
};

// Piece of text flowing through the pre-tokenizers. at_origin: it starts at offset 0 of the original input
// (what Metaspace's prepend_scheme "first" looks at).
struct Word {
  std::string text;
  bool at_origin = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual Status Apply(std::string* text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual Status Apply(std::vector<Word>* words) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>* tokens) const = 0;
};

// null JSON gives nullptr (no stage). `where` is the JSON path used in error messages.
StatusOr<std::unique_ptr<Normalizer>> BuildNormalizer(const nlohmann::json& j, const std::string& where);
// byte_level_last: set when the pre-tokenizer ends with ByteLevel; that final byte-to-char mapping is then
// left to the BPE model (which maps bytes straight to ids), so words come out as raw UTF-8.
StatusOr<std::unique_ptr<PreTokenizer>> BuildPreTokenizer(const nlohmann::json& j, const std::string& where,
                                                          bool* byte_level_last);
StatusOr<std::unique_ptr<Decoder>> BuildDecoder(const nlohmann::json& j, const std::string& where);

// GPT-2's byte <-> printable char table (bytes_to_unicode), as UTF-8 strings / a reverse map.
const std::vector<std::string>& ByteLevelAlphabet();
// The byte a ByteLevel char stands for, or -1.
int ByteLevelCharToByte(char32_t c);

}  // namespace anneal::data
