// The statistical language filter of `data clean --languages`: keeps a conversation when Compact Language
// Detector 2 (CLD2, Debian's libcld2: the n-gram detector Chrome used) attributes enough of its text to the
// languages asked for.
//
// Detection runs CLD2's ExtDetectLanguageSummary over the conversation's text as plain text (no HTML skipping):
// it returns up to three languages with the percentage of the text's letters each covers. The conversation's
// confidence is the summed share (0..1) of the allowed languages among those three; it is kept when that share
// is >= min_confidence (default 0.5), so a mixed English/Chinese row passes `en,zh` as a whole. A text without
// letters (digits, punctuation only) is kept, as the script filter keeps it. Text CLD2 cannot tell (too short:
// "ok", "hi") detects as "un"; it is dropped unless "un" is among the languages.
// A dropped row's detected language is the most common one of its three that is not allowed ("un" when none).
//
// Languages are CLD2's codes, case-insensitive: ISO 639-1 where one exists (en, zh, ja, ko, fr, de, ru, ar, ...),
// or its names (english). A bare code also allows its regional variants: "zh" allows zh-Hant. CLD2's own
// legacy codes are accepted and reported as CLD2 reports them (Hebrew is "iw", "he" is accepted for it; Javanese
// "jw"; Norwegian "no", "nb" accepted). Unknown codes are refused by name.
//
// Thread-safety: immutable after Create; CLD2's detection is thread-safe.
//
// Example:
//   ASSIGN_OR_RETURN(LanguageFilter f, LanguageFilter::Create({"en", "zh"}, 0.5));
//   LanguageDetection d = f.Detect("Bonjour tout le monde, comment allez-vous ?");
//   f.Keeps(d)   // false
//   d.language   // "fr"
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::data {

struct LanguageDetection {
  std::string language;      // CLD2 code of the top language not allowed ("un": undetermined); the top one if kept
  double confidence = 0;     // share (0..1) of the text's letters in the allowed languages
  bool has_letters = false;  // false: digits/punctuation only (kept)
  bool reliable = false;     // CLD2's is_reliable for the whole text
};

class LanguageFilter {
 public:
  // INVALID_ARGUMENT naming an unknown language code, an empty list, or min_confidence outside (0, 1];
  // FAILED_PRECONDITION in a build without libcld2 (a trainer-only build on a machine lacking it).
  static StatusOr<LanguageFilter> Create(const std::vector<std::string>& languages, double min_confidence);

  // `text` must be valid UTF-8 (invalid bytes make the text undetermined).
  LanguageDetection Detect(std::string_view text) const;
  bool Keeps(const LanguageDetection& d) const { return !d.has_letters || d.confidence >= min_confidence_; }

  // The top language CLD2 finds in `text` (its code; "un" when undetermined), for tests and parity.
  static std::string TopLanguage(std::string_view text);

 private:
  std::set<int> allowed_;  // CLD2::Language values
  double min_confidence_ = 0.5;
};

// Whether this build has CLD2 (false only in a trainer-only build without libcld2).
bool LanguageIdAvailable();

}  // namespace anneal::data
