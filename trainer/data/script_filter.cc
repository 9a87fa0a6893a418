#include "trainer/data/script_filter.h"

#include <fmt/format.h>
#include <unicode/uchar.h>
#include <unicode/uscript.h>

#include <map>

#include "trainer/data/utf8.h"

namespace anneal::data {
namespace {

// Languages whose script tells them apart from the others a team is likely to mix.
const std::map<std::string, std::vector<UScriptCode>>& LanguageScripts() {
  static const auto* const kLanguages = new std::map<std::string, std::vector<UScriptCode>>{
      {"zh", {USCRIPT_HAN}},
      {"ja", {USCRIPT_HAN, USCRIPT_HIRAGANA, USCRIPT_KATAKANA}},
      {"ko", {USCRIPT_HANGUL, USCRIPT_HAN}},
      {"ru", {USCRIPT_CYRILLIC}},
      {"ar", {USCRIPT_ARABIC}},
      {"el", {USCRIPT_GREEK}},
      {"he", {USCRIPT_HEBREW}},
      {"th", {USCRIPT_THAI}},
      {"hi", {USCRIPT_DEVANAGARI}},
  };
  return *kLanguages;
}

// ISO 639-1 codes of languages written in the Latin script (the common ones): refused with the reason.
bool IsLatinLanguage(const std::string& name) {
  static const std::set<std::string> kLatin = {"en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no",
                                               "fi", "pl", "cs", "tr", "vi", "id", "ms", "ro", "hu"};
  return kLatin.count(name) > 0;
}

}  // namespace

StatusOr<ScriptFilter> ScriptFilter::Create(const std::vector<std::string>& scripts, double min_fraction) {
  if (!(min_fraction > 0 && min_fraction <= 1)) {
    return InvalidArgumentError(fmt::format("script_fraction {} is not in (0, 1]", min_fraction));
  }
  if (scripts.empty()) return InvalidArgumentError("scripts: name at least one script (e.g. Latin, Han)");
  ScriptFilter f;
  f.min_fraction_ = min_fraction;
  for (const std::string& name : scripts) {
    if (auto it = LanguageScripts().find(name); it != LanguageScripts().end()) {
      for (UScriptCode code : it->second) f.scripts_.insert(code);
      continue;
    }
    if (IsLatinLanguage(name)) {
      return InvalidArgumentError(fmt::format(
          "scripts: '{}' is a language written in the Latin script; telling it from other Latin-script languages "
          "needs a statistical language model: use languages (--languages {}, CLD2) or ask for the script (Latin)",
          name, name));
    }
    const int32_t code = u_getPropertyValueEnum(UCHAR_SCRIPT, name.c_str());
    if (code == UCHAR_INVALID_CODE || code == USCRIPT_COMMON || code == USCRIPT_INHERITED || code == USCRIPT_UNKNOWN) {
      return InvalidArgumentError(
          fmt::format("scripts: unknown script '{}' (Unicode script names or ISO 15924 codes: Latin, Han, Cyrillic, "
                      "Arabic, Hangul, Hiragana, Katakana, Greek, ...; or zh, ja, ko, ru, ar, el, he, th, hi)",
                      name));
    }
    f.scripts_.insert(code);
  }
  return f;
}

double ScriptFilter::AllowedFraction(std::string_view text) const {
  int64_t letters = 0, allowed = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t cp = NextCodePoint(text, &pos);
    UErrorCode err = U_ZERO_ERROR;
    const UScriptCode script = uscript_getScript(static_cast<UChar32>(cp), &err);
    if (U_FAILURE(err) || script == USCRIPT_COMMON || script == USCRIPT_INHERITED || script == USCRIPT_UNKNOWN) {
      continue;
    }
    ++letters;
    if (scripts_.count(script) > 0) ++allowed;
  }
  return letters == 0 ? 1.0 : static_cast<double>(allowed) / static_cast<double>(letters);
}

bool ScriptFilter::Keeps(std::string_view text) const {
  return AllowedFraction(text) >= min_fraction_;
}

}  // namespace anneal::data
