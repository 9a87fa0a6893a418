#include "trainer/data/language_filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#if ANNEAL_HAVE_CLD2
#include <cld2/public/compact_lang_det.h>
#include <cld2/public/encodings.h>

#include <cstdio>  // compact_lang_det.h uses FILE without including it
#endif

namespace anneal::data {

#if ANNEAL_HAVE_CLD2
namespace {

struct Summary {
  CLD2::Language top = CLD2::UNKNOWN_LANGUAGE;
  CLD2::Language language3[3] = {CLD2::UNKNOWN_LANGUAGE, CLD2::UNKNOWN_LANGUAGE, CLD2::UNKNOWN_LANGUAGE};
  int percent3[3] = {0, 0, 0};
  int text_bytes = 0;
  bool reliable = false;
};

Summary Summarize(std::string_view text) {
  Summary s;
  double scores[3];
  int valid_prefix = 0;
  const CLD2::CLDHints hints = {nullptr, nullptr, CLD2::UNKNOWN_ENCODING, CLD2::UNKNOWN_LANGUAGE};
  const int length = static_cast<int>(std::min<size_t>(text.size(), 1u << 30));
  s.top = CLD2::ExtDetectLanguageSummaryCheckUTF8(text.data(), length, /*is_plain_text=*/true, &hints, /*flags=*/0,
                                                  s.language3, s.percent3, scores, nullptr, &s.text_bytes, &s.reliable,
                                                  &valid_prefix);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

bool LanguageIdAvailable() {
  return true;
}

StatusOr<LanguageFilter> LanguageFilter::Create(const std::vector<std::string>& languages, double min_confidence) {
  if (languages.empty()) return InvalidArgumentError("languages: empty list (give codes such as en,zh)");
  if (!(min_confidence > 0 && min_confidence <= 1))
    return InvalidArgumentError(fmt::format("language confidence {} must be in (0, 1]", min_confidence));
  LanguageFilter f;
  f.min_confidence_ = min_confidence;
  for (const std::string& name : languages) {
    const std::string code = Lower(name);
    if (code == "un") {
      f.allowed_.insert(CLD2::UNKNOWN_LANGUAGE);
      continue;
    }
    const CLD2::Language lang = CLD2::GetLanguageFromName(code.c_str());
    if (lang == CLD2::UNKNOWN_LANGUAGE)
      return InvalidArgumentError(fmt::format(
          "unknown language '{}' (CLD2 codes: en, zh, ja, ko, fr, de, es, ru, ar, ...; 'un' keeps undetermined text)",
          name));
    f.allowed_.insert(lang);
    // A bare code allows its variants (zh: zh-Hant too).
    const std::string base = CLD2::LanguageCode(lang);
    if (base.find('-') == std::string::npos) {
      for (int l = 0; l < CLD2::NUM_LANGUAGES; ++l) {
        const std::string other = CLD2::LanguageCode(static_cast<CLD2::Language>(l));
        if (other.size() > base.size() && other.compare(0, base.size() + 1, base + "-") == 0) f.allowed_.insert(l);
      }
    }
  }
  return f;
}

LanguageDetection LanguageFilter::Detect(std::string_view text) const {
  const Summary s = Summarize(text);
  LanguageDetection d;
  d.has_letters = s.text_bytes > 0;
  d.reliable = s.reliable;
  int allowed_percent = 0;
  std::string first_refused;
  for (int k = 0; k < 3; ++k) {
    if (s.percent3[k] <= 0) continue;
    if (allowed_.count(s.language3[k]))
      allowed_percent += s.percent3[k];
    else if (first_refused.empty())
      first_refused = CLD2::LanguageCode(s.language3[k]);
  }
  d.confidence = std::min(1.0, allowed_percent / 100.0);
  if (s.top == CLD2::UNKNOWN_LANGUAGE && allowed_.count(CLD2::UNKNOWN_LANGUAGE)) d.confidence = 1.0;
  if (d.confidence >= min_confidence_ || first_refused.empty())
    d.language = CLD2::LanguageCode(s.top);
  else
    d.language = first_refused;
  return d;
}

std::string LanguageFilter::TopLanguage(std::string_view text) {
  return CLD2::LanguageCode(Summarize(text).top);
}

#else  // a trainer-only build without libcld2

bool LanguageIdAvailable() {
  return false;
}

StatusOr<LanguageFilter> LanguageFilter::Create(const std::vector<std::string>&, double) {
  return FailedPreconditionError(
      "languages: this anneal-train was built without libcld2 (install libcld2-dev, scripts/setup.sh, and rebuild)");
}
LanguageDetection LanguageFilter::Detect(std::string_view) const {
  return {};
}
std::string LanguageFilter::TopLanguage(std::string_view) {
  return "un";
}

#endif

}  // namespace anneal::data
