#include "trainer/data/pii.h"

#include <fmt/format.h>

#include <cctype>

#include "trainer/data/text_pipeline.h"

namespace anneal::data {
namespace {

// Boundaries are ASCII letters and digits only: with PCRE2_UCP, \w would also refuse a number written right
// after a Chinese character ("电话13812345678"), which is how such text writes them.
constexpr const char* kEmail =
    R"((?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-]))";
// Chinese resident identity number | payment card (issuer prefixes: Visa, Mastercard, Amex, Diners, JCB,
// Discover, UnionPay) | US SSN.
constexpr const char* kId =
    R"((?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z]))"
    R"(|(?<![0-9A-Za-z-])(?:4|5[1-5]|2[2-7]|3[0478]|35|6)(?:[ -]?[0-9]){11,18}(?![0-9A-Za-z-]))"
    R"(|(?<![0-9A-Za-z-])(?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![0-9A-Za-z-]))";
// International | North American | Chinese mobile (plain or grouped 3-4-4).
constexpr const char* kPhone =
    R"((?<![0-9A-Za-z+])\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}(?![0-9A-Za-z]))"
    R"(|(?<![0-9A-Za-z(])(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-.])[2-9][0-9]{2}[-.][0-9]{4}(?![0-9A-Za-z]))"
    R"(|(?<![0-9A-Za-z])1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9A-Za-z]))";

std::string Digits(std::string_view s) {
  std::string out;
  for (char c : s)
    if (std::isdigit(static_cast<unsigned char>(c)) || c == 'X' || c == 'x') out.push_back(c);
  return out;
}

bool IdValid(std::string_view match) {
  const std::string d = Digits(match);
  if (d.size() == 18 && match.size() == 18) return ChineseIdValid(match);
  if (match.size() == 11 && match[3] == '-' && match[6] == '-') return true;  // SSN: the pattern checked it
  return d.size() >= 13 && d.size() <= 19 && LuhnValid(match);
}

bool PhoneValid(std::string_view match) {
  const size_t digits = Digits(match).size();
  return digits >= 8 && digits <= 15;
}

bool AlwaysValid(std::string_view) {
  return true;
}

}  // namespace

bool LuhnValid(std::string_view text) {
  int sum = 0, count = 0;
  for (auto it = text.rbegin(); it != text.rend(); ++it) {
    if (*it == ' ' || *it == '-') continue;
    if (!std::isdigit(static_cast<unsigned char>(*it))) return false;
    int d = *it - '0';
    if (count++ % 2 == 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return count > 0 && sum % 10 == 0;
}

bool ChineseIdValid(std::string_view id) {
  static constexpr int kWeights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
  static constexpr char kCheck[11] = {'1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'};
  if (id.size() != 18) return false;
  int sum = 0;
  for (size_t i = 0; i < 17; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(id[i]))) return false;
    sum += (id[i] - '0') * kWeights[i];
  }
  return std::toupper(static_cast<unsigned char>(id[17])) == kCheck[sum % 11];
}

StatusOr<PiiMasker> PiiMasker::Create(const std::vector<std::string>& kinds) {
  bool email = false, id = false, phone = false;
  for (const std::string& k : kinds) {
    if (k == "email") {
      email = true;
    } else if (k == "id") {
      id = true;
    } else if (k == "phone") {
      phone = true;
    } else {
      return InvalidArgumentError(fmt::format("mask_pii: unknown kind '{}' (known: email, phone, id)", k));
    }
  }
  PiiMasker m;
  const auto add = [&](bool wanted, const char* kind, const char* pattern, bool (*valid)(std::string_view)) -> Status {
    if (!wanted) return Status::Ok();
    ASSIGN_OR_RETURN(std::shared_ptr<Regex> regex, Regex::Compile(pattern));
    m.passes_.push_back({kind, std::move(regex), valid});
    return Status::Ok();
  };
  RETURN_IF_ERROR(add(email, "email", kEmail, AlwaysValid));
  RETURN_IF_ERROR(add(id, "id", kId, IdValid));
  RETURN_IF_ERROR(add(phone, "phone", kPhone, PhoneValid));
  return m;
}

std::string PiiMasker::Mask(std::string_view text, PiiCounts* counts) const {
  std::string current(text);
  std::vector<std::pair<size_t, size_t>> spans;
  for (const Pass& pass : passes_) {
    pass.regex->FindAll(current, &spans);
    if (spans.empty()) continue;
    std::string placeholder(1, '<');
    for (char c : pass.kind) placeholder.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    placeholder.push_back('>');
    std::string next;
    next.reserve(current.size());
    size_t at = 0;
    for (const auto& [begin, end] : spans) {
      if (!pass.valid(std::string_view(current).substr(begin, end - begin))) continue;
      next.append(current, at, begin - at).append(placeholder);
      at = end;
      if (counts != nullptr) ++counts->by_kind[pass.kind];
    }
    next.append(current, at, std::string::npos);
    current = std::move(next);
  }
  return current;
}

}  // namespace anneal::data
