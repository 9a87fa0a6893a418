// UTF-8 helpers for the tokenizer: validation with lossy repair, code point iteration, Unicode normalization.
//
// Invalid UTF-8 is repaired the way Rust's String::from_utf8_lossy (and Python's bytes.decode("utf-8",
// "replace")) do it: each maximal invalid subpart becomes one U+FFFD, so our tokenizer sees the same text as
// HF tokenizers would after the caller decoded the bytes.
// NFC/NFD/NFKC/NFKD go through ICU (libicu, Debian package libicu-dev).
//
// Ownership: none (string values in and out).
// Thread-safety: pure functions (ICU's normalizer instances are immutable singletons).
//
// Example:
//   std::string clean = anneal::data::Utf8Lossy(raw_bytes);
//   size_t pos = 0; while (pos < clean.size()) { char32_t cp = anneal::data::NextCodePoint(clean, &pos); }
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace anneal::data {

// Length in bytes of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid there.
size_t ValidUtf8SequenceLength(std::string_view s, size_t i);

// True when every byte of s belongs to a valid UTF-8 sequence.
bool IsValidUtf8(std::string_view s);

// s with every maximal invalid subpart replaced by U+FFFD.
std::string Utf8Lossy(std::string_view s);

// Decodes the code point at *pos (s must be valid UTF-8) and advances *pos past it.
char32_t NextCodePoint(std::string_view s, size_t* pos);

// Appends the UTF-8 encoding of cp.
void AppendUtf8(char32_t cp, std::string* out);

// Byte length of the UTF-8 sequence announced by the lead byte b (1 for continuation/invalid bytes).
inline size_t Utf8LeadLength(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// Unicode normalization of valid UTF-8 text. Errors name the form when ICU refuses.
StatusOr<std::string> NormalizeUnicode(std::string_view s, NormalForm form);

// Lowercases (full Unicode case mapping, ICU root locale).
StatusOr<std::string> LowercaseUnicode(std::string_view s);

}  // namespace anneal::data
