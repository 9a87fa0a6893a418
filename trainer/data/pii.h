// PII masking for `data clean --mask-pii`: e-mail addresses, phone numbers and ID numbers in a text are replaced
// by a placeholder, so a model fine-tuned on the data cannot learn them.
//
//   kind   placeholder   what is matched (PCRE2, then checked in code where a checksum exists)
//   email  <EMAIL>       local@domain.tld (RFC 5322's common subset: letters, digits, ._%+- before the @,
//                        dotted labels and a 2+ letter TLD after it)
//   id     <ID>          Chinese resident identity numbers (18 characters, the ISO 7064 MOD 11-2 check digit
//                        verified), payment card numbers (13-19 digits, optionally grouped by spaces or dashes,
//                        the Luhn check verified), US social security numbers (ddd-dd-dddd; area not 000, 666
//                        or 9xx, group not 00, serial not 0000)
//   phone  <PHONE>       international numbers (+ country code, 8-15 digits in groups), North American
//                        (ddd) ddd-dddd / ddd-ddd-dddd / ddd.ddd.dddd, Chinese mobile numbers (1[3-9] + 9 digits)
//
// Kinds are applied in the order email, id, phone, so the digits of an e-mail address or of a card number are
// never taken for a phone number. A digit run inside a longer run of digits or letters is never matched (a hash,
// an order number and a date such as 2024-01-15 stay). Precision over recall: what is masked is what these
// shapes say; names, street addresses and free-form numbers are not detected.
//
// Thread-safety: PiiMasker is immutable after Create; Mask may be called from several threads.
//
// Example:
//   ASSIGN_OR_RETURN(PiiMasker m, PiiMasker::Create({"email", "phone"}));
//   PiiCounts counts;
//   std::string clean = m.Mask("mail bob@example.com or call +1 415 555 0100", &counts);
//   // "mail <EMAIL> or call <PHONE>", counts.by_kind = {email: 1, phone: 1}
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::data {

class Regex;

struct PiiCounts {
  std::map<std::string, int64_t> by_kind;  // kind -> spans masked
};

class PiiMasker {
 public:
  // `kinds`: any of "email", "phone", "id" (INVALID_ARGUMENT naming an unknown one); empty: masks nothing.
  static StatusOr<PiiMasker> Create(const std::vector<std::string>& kinds);

  // `text` must be valid UTF-8. Adds what it masked to `counts` (may be null).
  std::string Mask(std::string_view text, PiiCounts* counts) const;
  bool empty() const { return passes_.empty(); }

 private:
  struct Pass {
    std::string kind;
    std::shared_ptr<Regex> regex;
    bool (*valid)(std::string_view match) = nullptr;  // a checksum or shape check; null: every match
  };
  std::vector<Pass> passes_;
};

// Building blocks, exposed for tests.
bool LuhnValid(std::string_view digits_and_separators);
bool ChineseIdValid(std::string_view id18);

}  // namespace anneal::data
