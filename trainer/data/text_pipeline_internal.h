// Internal to trainer/data's text pipeline: helpers shared by the normalizer, pre-tokenizer and decoder files
// (JSON fields, String/Regex patterns, HF's split behaviours, Metaspace's prepend scheme). Not a public API.
//
// Thread-safety: immutable values and pure functions.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/data/text_pipeline.h"

namespace anneal::data::internal {

using nlohmann::json;

std::string StrField(const json& j, const char* key, const std::string& def = "");
bool BoolField(const json& j, const char* key, bool def);

// A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const;
};
StatusOr<Pattern> ParsePattern(const json& j, const std::string& where);
std::string ReplaceAll(std::string_view text, const Pattern& p, std::string_view content);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
StatusOr<SplitBehavior> ParseBehavior(const std::string& s, const std::string& where);
// HF normalizer.rs NormalizedString::split: matches -> pieces per behaviour; empty pieces dropped.
void SplitWord(const Word& w, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
               bool invert, std::vector<Word>* out);

enum class PrependScheme { kAlways, kFirst, kNever };
StatusOr<PrependScheme> ParseScheme(const json& j, const std::string& where);

}  // namespace anneal::data::internal
