#include "jobspec/language_codes.h"

#include <cctype>
#include <string>

#if ANNEAL_HAVE_CLD2
#include <cld2/public/compact_lang_det.h>

#include <cstdio>  // compact_lang_det.h uses FILE without including it
#endif

namespace anneal::jobspec {

bool IsKnownLanguageCode(std::string_view code) {
  std::string lower(code);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "un") return true;
#if ANNEAL_HAVE_CLD2
  return CLD2::GetLanguageFromName(lower.c_str()) != CLD2::UNKNOWN_LANGUAGE;
#else
  const size_t dash = lower.find('-');
  const size_t base = dash == std::string::npos ? lower.size() : dash;
  if (base < 2 || base > 3) return false;
  for (char c : lower)
    if (!std::isalpha(static_cast<unsigned char>(c)) && c != '-') return false;
  return true;
#endif
}

}  // namespace anneal::jobspec
