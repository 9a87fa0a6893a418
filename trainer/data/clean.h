// `data clean`: filters a dataset's conversations and reports what was dropped and why.
//
// Steps, in order, on each conversation's text (system prompt and every message):
//   1. Unicode normalization (NFC by default; NFKC, NFD, NFKD or none), ICU (utf8.h).
//   2. Markup stripping (optional): tags removed, <script>/<style> bodies and comments dropped, HTML entities
//      decoded (&amp; &lt; &gt; &quot; &apos; &#39; &nbsp; &#NNN; &#xHH;).
//   3. PII masking (optional, pii.h): e-mail addresses, ID numbers and phone numbers replaced by <EMAIL>, <ID>,
//      <PHONE>; counted by kind in the report.
//   4. Length filters: min_chars / max_chars over the conversation's text in code points (0: no limit).
//   5. Script filter (optional, script_filter.h): dropped as "wrong_script" when less than script_fraction of
//      its letters are in the scripts asked for (a language filter for languages with their own script).
//   6. Language filter (optional, language_filter.h): CLD2's statistical language identification; dropped as
//      "wrong_language" when less than language_confidence of the text is in the languages asked for, the
//      dropped row naming the language detected (DroppedRow::language).
//   7. Exact dedup: a conversation equal to an earlier kept one (system, roles and contents, after 1-3).
//   8. Near dedup (optional): MinHash-LSH as datasketch 2.x does it (scheme affine32, sha1_hash32, seed,
//      num_perm; bands x rows minimizing datasketch's weighted false positive + negative integral for the
//      threshold), over the set of character shingles of `shingle` code points of the text (the whole text
//      when shorter). Conversations are visited in order; one whose LSH query finds a kept candidate is dropped
//      as its near-duplicate, otherwise it is kept and inserted (the usual datasketch dedup loop).
// Pre-tokenized rows are kept unchanged except for exact dedup on their ids.
//
// Ownership: values in, values out. Thread-safety: pure functions.
//
// Example:
//   CleanOptions o; o.near_dedup = true; o.jaccard_threshold = 0.7;
//   ASSIGN_OR_RETURN(CleanResult r, CleanConversations(rows, o));
//   // r.kept, r.dropped[i].reason ("near_duplicate"), r.dropped[i].duplicate_of (an origin)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/data/dataset.h"

namespace anneal::data {

struct CleanOptions {
  std::string normalize = "NFC";  // NFC, NFKC, NFD, NFKD, none
  bool strip_markup = false;
  std::vector<std::string> mask_pii;     // any of email, phone, id; empty: no masking
  std::vector<std::string> scripts;      // Unicode scripts or zh/ja/ko/...; empty: no script filter
  double script_fraction = 0.5;          // share of letters that must be in `scripts`
  std::vector<std::string> languages;    // CLD2 language codes (en, zh, ...); empty: no language filter
  double language_confidence = 0.5;      // share of the text that must be in `languages`
  int64_t min_chars = 0, max_chars = 0;  // 0: no limit
  bool exact_dedup = true;
  bool near_dedup = false;
  double jaccard_threshold = 0.8;
  int num_perm = 128;
  int shingle = 5;
  uint32_t seed = 1;
};

struct DroppedRow {
  std::string origin;
  std::string reason;              // too_short, too_long, wrong_script, wrong_language, exact_duplicate, near_duplicate
  std::string duplicate_of;        // the kept row's origin, for duplicates
  std::string language;            // wrong_language: the language detected (CLD2 code, "un": undetermined)
  double language_confidence = 0;  // wrong_language: share of the text in the languages asked for
};

struct CleanResult {
  std::vector<Conversation> kept;
  std::vector<DroppedRow> dropped;
  std::map<std::string, int64_t> dropped_by_reason;
  std::map<std::string, int64_t> dropped_by_language;  // wrong_language drops by detected language
  std::map<std::string, int64_t> pii_masked;           // kind -> spans masked in the kept and dropped rows
  int lsh_bands = 0, lsh_rows = 0;                     // near dedup's LSH parameters
};

StatusOr<CleanResult> CleanConversations(const std::vector<Conversation>& rows, const CleanOptions& options);

// Building blocks, exposed for tests.
std::string StripMarkup(std::string_view html);
// datasketch MinHash(num_perm, seed) (scheme affine32) updated with each shingle's UTF-8 bytes.
std::vector<uint32_t> MinHashSignature(const std::vector<std::string>& shingles, int num_perm, uint32_t seed);
std::vector<std::string> CharShingles(std::string_view text, int k);
// datasketch's _optimal_param(threshold, num_perm, 0.5, 0.5): (bands, rows).
std::pair<int, int> LshParameters(double threshold, int num_perm);

}  // namespace anneal::data
