// BPE model of an HF tokenizer.json ("model": {"type": "BPE", ...}): vocab, merges ranked by their order,
// byte_fallback (<0xXX> tokens), unk/fuse_unk, ignore_merges.
//
// Words arrive pre-tokenized. In byte-level mode a word is raw UTF-8 and each byte maps straight to the id of
// its GPT-2 alphabet char (no string is built); otherwise the word's chars are looked up in the vocab.
// Merges run lowest rank first, leftmost on ties (HF's Word::merge_all), with a (left id, right id) -> rank
// hash table.
//
// Ownership: a BpeModel is a value owning its vocab and merge table.
// Thread-safety: immutable after FromJson; TokenizeWord may run concurrently.
//
// Example:
//   ASSIGN_OR_RETURN(BpeModel bpe, BpeModel::FromJson(json["model"], "model"));
//   std::vector<int32_t> ids; bpe.TokenizeWord("Hello", /*byte_level=*/true, &ids);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace anneal::data {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  static StatusOr<BpeModel> FromJson(const nlohmann::json& model, const std::string& where);

  void TokenizeWord(std::string_view word, bool byte_level, std::vector<int32_t>* out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
  // Empty string when the id is not in the vocab.
  const std::string& IdToToken(int32_t id) const;
  // One past the largest id of the vocab.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct MergeSlot {
    uint64_t key = ~0ull;
    uint32_t rank = 0;
    int32_t new_id = -1;
  };
  const MergeSlot* FindMerge(int32_t a, int32_t b) const;
  void InsertMerge(int32_t a, int32_t b, uint32_t rank, int32_t new_id);

  TokenMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<MergeSlot> merges_;  // open addressing, power-of-two size
  uint64_t merge_mask_ = 0;
  std::vector<int32_t> byte_ids_;           // byte-level: byte -> id of its alphabet char (-1 if absent)
  std::vector<int32_t> byte_fallback_ids_;  // byte -> id of <0xXX> (-1 if absent)
  std::vector<int32_t> ascii_ids_;          // ASCII char -> id of that one-char token (-1 if absent)
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
};

}  // namespace anneal::data
