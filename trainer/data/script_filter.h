// The writing-system filter of `data clean --scripts`: keeps a conversation when enough of its letters are
// written in the scripts asked for (Unicode's Script property, from ICU).
//
// A conversation's letters are its code points whose script is neither Common (digits, punctuation, symbols,
// spaces) nor Inherited (combining marks); a text with no letters (numbers, code punctuation only) is kept.
// It is kept when (letters in the allowed scripts) / letters >= min_fraction (default 0.5).
//
// Scripts are named as Unicode names them, by long name or ISO 15924 code, case-insensitive: Latin / Latn, Han /
// Hani, Cyrillic / Cyrl, Arabic, Hangul, Hiragana, Katakana, Greek, Hebrew, Thai, Devanagari, ... The language
// shortcuts "zh" (Han), "ja" (Han, Hiragana, Katakana), "ko" (Hangul, Han), "ru" (Cyrillic), "ar" (Arabic), "el"
// (Greek), "he" (Hebrew), "th" (Thai) and "hi" (Devanagari) stand for their scripts. Telling apart languages
// that share a script (English from French, both Latin) needs a statistical language model (language_filter.h,
// `--languages`): "en", "fr", ... are refused here with that reason, naming both.
//
// Thread-safety: immutable after Create.
//
// Example:
//   ASSIGN_OR_RETURN(ScriptFilter f, ScriptFilter::Create({"Latin", "zh"}, 0.8));
//   f.Keeps("Bonjour 你好")  // true: every letter is Latin or Han
//   f.Keeps("Привет, мир")   // false: the letters are Cyrillic
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::data {

class ScriptFilter {
 public:
  // INVALID_ARGUMENT naming an unknown script or a Latin-script language code, or min_fraction outside (0, 1].
  static StatusOr<ScriptFilter> Create(const std::vector<std::string>& scripts, double min_fraction);

  // `text` must be valid UTF-8.
  bool Keeps(std::string_view text) const;
  // The fraction of letters in the allowed scripts (1 when the text has no letters).
  double AllowedFraction(std::string_view text) const;
  const std::set<int>& scripts() const { return scripts_; }  // UScriptCode values

 private:
  std::set<int> scripts_;
  double min_fraction_ = 0.5;
};

}  // namespace anneal::data
