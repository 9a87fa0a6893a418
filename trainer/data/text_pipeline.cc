#include "trainer/data/text_pipeline.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>

#include "trainer/data/text_pipeline_internal.h"
#include "trainer/data/utf8.h"

// Regex, the byte-level alphabet, and the helpers shared by normalizers.cc, pre_tokenizers.cc, decoders.cc.
namespace anneal::data {
namespace internal {

// ---- JSON field helpers ---------------------------------------------------------------------------------------
std::string StrField(const json& j, const char* key, const std::string& def) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : def;
}
bool BoolField(const json& j, const char* key, bool def) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : def;
}

void Pattern::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const {
  out->clear();
  if (regex) {
    regex->FindAll(text, out);
    return;
  }
  if (literal.empty()) return;
  for (size_t pos = text.find(literal); pos != std::string_view::npos; pos = text.find(literal, pos + literal.size()))
    out->emplace_back(pos, pos + literal.size());
}

StatusOr<Pattern> ParsePattern(const json& j, const std::string& where) {
  Pattern p;
  if (j.is_object() && j.contains("String") && j["String"].is_string()) {
    p.literal = j["String"].get<std::string>();
  } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
    auto r = Regex::Compile(j["Regex"].get<std::string>());
    if (!r.ok()) return r.status().WithContext(where);
    p.regex = *r;
  } else {
    return InvalidArgumentError(where + ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
  }
  return p;
}

std::string ReplaceAll(std::string_view text, const Pattern& p, std::string_view content) {
  thread_local std::vector<std::pair<size_t, size_t>> m;
  p.FindAll(text, &m);
  if (m.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + m.size() * content.size());
  size_t prev = 0;
  for (auto [b, e] : m) {
    out.append(text.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}


StatusOr<SplitBehavior> ParseBehavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  return InvalidArgumentError(where + ": unknown split behavior '" + s +
                              "' (known: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
}

void SplitWord(const Word& w, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
               bool invert, std::vector<Word>* out) {
  struct Span { size_t b, e; bool is_match; };
  // Per-thread scratch: SplitWord runs for every piece of every text, so no allocation per call.
  thread_local std::vector<Span> spans, res;
  spans.clear();
  res.clear();
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  }
  if (prev != w.text.size()) spans.push_back({prev, w.text.size(), false});
  if (invert)
    for (auto& s : spans) s.is_match = !s.is_match;

  switch (behavior) {
    case SplitBehavior::kIsolated:
      res.assign(spans.begin(), spans.end());
      break;
    case SplitBehavior::kRemoved:
      for (auto& s : spans)
        if (!s.is_match) res.push_back(s);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (auto& s : spans) {
        if (s.is_match && !prev_match && !res.empty()) res.back().e = s.e;
        else res.push_back({s.b, s.e, false});
        prev_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        auto& s = spans[k];
        if (s.is_match && !prev_match && !res.empty()) res.back().b = s.b;
        else res.push_back({s.b, s.e, false});
        prev_match = s.is_match;
      }
      std::reverse(res.begin(), res.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (auto& s : spans) {
        if (s.is_match == prev_match && !res.empty()) res.back().e = s.e;
        else res.push_back({s.b, s.e, false});
        prev_match = s.is_match;
      }
      break;
    }
  }
  for (auto& s : res)
    if (s.e > s.b) out->push_back({w.text.substr(s.b, s.e - s.b), w.at_origin && s.b == 0});
}

StatusOr<PrependScheme> ParseScheme(const json& j, const std::string& where) {
  if (j.contains("prepend_scheme")) {
    std::string s = StrField(j, "prepend_scheme");
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    return InvalidArgumentError(where + ".prepend_scheme: '" + s + "' (known: always, first, never)");
  }
  return BoolField(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

}  // namespace internal

// ---- Regex ----------------------------------------------------------------------------------------------------
StatusOr<std::shared_ptr<Regex>> Regex::Compile(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return InvalidArgumentError("regex /" + pattern + "/ at offset " + std::to_string(off) + ": " +
                                reinterpret_cast<char*>(buf));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
  auto r = std::shared_ptr<Regex>(new Regex());
  r->code_ = code;
  r->pattern_ = pattern;
  return r;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const {
  out->clear();
  struct MatchData {
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    ~MatchData() { pcre2_match_data_free(md); }
  };
  thread_local MatchData tl;
  auto* code = static_cast<pcre2_code*>(code_);
  size_t start = 0;
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (start <= text.size()) {
    // Text is valid UTF-8 (repaired on entry), so the per-call UTF check is skipped.
    int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, tl.md, nullptr);
    if (rc < 0) break;
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tl.md);
    size_t b = ov[0], e = ov[1];
    if (e > b) {
      out->emplace_back(b, e);
      start = e;
    } else {  // empty match: step one character, as onig's find_iter does
      if (b >= text.size()) break;
      start = b + Utf8LeadLength(static_cast<unsigned char>(text[b]));
    }
  }
}

// ---- byte-level alphabet --------------------------------------------------------------------------------------
namespace {
struct ByteTables {
  std::vector<std::string> alphabet = std::vector<std::string>(256);
  std::array<int, 512> reverse{};
  ByteTables() {
    reverse.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      AppendUtf8(cp, &alphabet[b]);
      reverse[cp] = b;
    }
  }
};
const ByteTables& Tables() {
  static const ByteTables t;
  return t;
}
}  // namespace

const std::vector<std::string>& ByteLevelAlphabet() { return Tables().alphabet; }
int ByteLevelCharToByte(char32_t c) { return c < 512 ? Tables().reverse[c] : -1; }

}  // namespace anneal::data
