// The language codes `data clean` (trainer/data/language_filter.h) and a clean job's `clean.languages` accept:
// Compact Language Detector 2's (CLD2, Debian's libcld2), so a job naming an unknown code is refused at submit.
//
// A code is known when CLD2 resolves it to a language (en, zh, zh-Hant, fr, he, ...; names such as english
// too, case-insensitive), or is "un" (undetermined text). A build without libcld2 (a trainer-only build on a
// machine lacking it) accepts any code of the form xx, xxx or xx-Yyyy; its trainer refuses `languages`.
//
// Thread-safety: pure function.
//
// Example:
//   IsKnownLanguageCode("en")  // true
//   IsKnownLanguageCode("xx")  // false
#pragma once

#include <string_view>

namespace anneal::jobspec {

bool IsKnownLanguageCode(std::string_view code);

}  // namespace anneal::jobspec
