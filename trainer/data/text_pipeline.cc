#include "trainer/data/text_pipeline.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>

#include "trainer/data/utf8.h"

namespace anneal::data {
namespace {

using nlohmann::json;

// ---- JSON field helpers ---------------------------------------------------------------------------------------
std::string StrField(const json& j, const char* key, const std::string& def = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : def;
}
bool BoolField(const json& j, const char* key, bool def) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : def;
}

// A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const {
    out->clear();
    if (regex) {
      regex->FindAll(text, out);
      return;
    }
    if (literal.empty()) return;
    for (size_t pos = text.find(literal); pos != std::string_view::npos; pos = text.find(literal, pos + literal.size()))
      out->emplace_back(pos, pos + literal.size());
  }
};

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

// ---- normalizers ----------------------------------------------------------------------------------------------
class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  Status Apply(std::string* t) const override {
    for (const auto& s : steps) RETURN_IF_ERROR(s->Apply(t));
    return Status::Ok();
  }
};
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm f) : form(f) {}
  NormalForm form;
  Status Apply(std::string* t) const override {
    ASSIGN_OR_RETURN(*t, NormalizeUnicode(*t, form));
    return Status::Ok();
  }
};
class LowercaseNormalizer : public Normalizer {
 public:
  Status Apply(std::string* t) const override {
    ASSIGN_OR_RETURN(*t, LowercaseUnicode(*t));
    return Status::Ok();
  }
};
class PrependNormalizer : public Normalizer {
 public:
  std::string prepend;
  Status Apply(std::string* t) const override {
    if (!t->empty()) t->insert(0, prepend);  // HF: only non-empty strings get the prefix
    return Status::Ok();
  }
};
class ReplaceNormalizer : public Normalizer {
 public:
  Pattern pattern;
  std::string content;
  Status Apply(std::string* t) const override {
    *t = ReplaceAll(*t, pattern, content);
    return Status::Ok();
  }
};
class StripNormalizer : public Normalizer {
 public:
  bool left = true, right = true;
  Status Apply(std::string* t) const override {
    // Unicode White_Space, as Rust's char::is_whitespace.
    auto is_ws = [](char32_t c) {
      return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
             (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
    };
    size_t b = 0, e = t->size();
    if (left) {
      while (b < e) {
        size_t p = b;
        if (!is_ws(NextCodePoint(*t, &p))) break;
        b = p;
      }
    }
    if (right) {
      while (e > b) {
        size_t s = e - 1;
        while (s > b && (static_cast<unsigned char>((*t)[s]) & 0xC0) == 0x80) --s;
        size_t p = s;
        if (!is_ws(NextCodePoint(*t, &p))) break;
        e = s;
      }
    }
    *t = t->substr(b, e - b);
    return Status::Ok();
  }
};

// ---- pre-tokenizers -------------------------------------------------------------------------------------------
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

StatusOr<SplitBehavior> ParseBehavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  return InvalidArgumentError(where + ": unknown split behavior '" + s +
                              "' (known: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
}

// HF normalizer.rs NormalizedString::split: matches -> pieces per behaviour; empty pieces dropped.
void SplitWord(const Word& w, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
               bool invert, std::vector<Word>* out) {
  struct Span { size_t b, e; bool is_match; };
  std::vector<Span> spans;
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  }
  if (prev != w.text.size()) spans.push_back({prev, w.text.size(), false});
  if (invert)
    for (auto& s : spans) s.is_match = !s.is_match;

  std::vector<Span> res;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      res = spans;
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

class SequencePre : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  Status Apply(std::vector<Word>* words) const override {
    for (const auto& s : steps) RETURN_IF_ERROR(s->Apply(words));
    return Status::Ok();
  }
};

class SplitPre : public PreTokenizer {
 public:
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  Status Apply(std::vector<Word>* words) const override {
    thread_local std::vector<std::pair<size_t, size_t>> m;
    std::vector<Word> out;
    out.reserve(words->size() * 4);
    for (const auto& w : *words) {
      pattern.FindAll(w.text, &m);
      SplitWord(w, m, behavior, invert, &out);
    }
    words->swap(out);
    return Status::Ok();
  }
};

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre : public PreTokenizer {
 public:
  bool add_prefix_space = false;
  std::shared_ptr<Regex> regex;  // null when use_regex is false
  bool map_bytes = true;         // false when the BPE model maps bytes itself (ByteLevel is last)
  Status Apply(std::vector<Word>* words) const override {
    thread_local std::vector<std::pair<size_t, size_t>> m;
    std::vector<Word> out;
    out.reserve(words->size() * 4);
    for (auto& w : *words) {
      if (add_prefix_space && (w.text.empty() || w.text[0] != ' ')) w.text.insert(0, " ");
      if (regex) {
        regex->FindAll(w.text, &m);
        SplitWord(w, m, SplitBehavior::kIsolated, false, &out);
      } else if (!w.text.empty()) {
        out.push_back(std::move(w));
      }
    }
    if (map_bytes) {
      const auto& alpha = ByteLevelAlphabet();
      for (auto& w : out) {
        std::string mapped;
        mapped.reserve(w.text.size() * 2);
        for (unsigned char c : w.text) mapped += alpha[c];
        w.text = std::move(mapped);
      }
    }
    words->swap(out);
    return Status::Ok();
  }
};

class DigitsPre : public PreTokenizer {
 public:
  bool individual = false;
  Status Apply(std::vector<Word>* words) const override {
    std::vector<Word> out;
    std::vector<std::pair<size_t, size_t>> m;
    for (const auto& w : *words) {
      m.clear();
      // HF uses char::is_numeric (Unicode N*); ASCII digits cover the families we load, plus full \p{N} via
      // PCRE2 would be slower on every word. Non-ASCII numerics are rare in pre-tokenizer Digits users.
      for (size_t i = 0; i < w.text.size(); ++i)
        if (w.text[i] >= '0' && w.text[i] <= '9') m.emplace_back(i, i + 1);
      SplitWord(w, m, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false, &out);
    }
    words->swap(out);
    return Status::Ok();
  }
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePre : public PreTokenizer {
 public:
  std::string replacement = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::kAlways;
  bool split = true;
  Status Apply(std::vector<Word>* words) const override {
    std::vector<Word> out;
    Pattern space{" ", nullptr};
    Pattern rep{replacement, nullptr};
    std::vector<std::pair<size_t, size_t>> m;
    for (auto& w : *words) {
      std::string t = ReplaceAll(w.text, space, replacement);
      bool starts = t.compare(0, replacement.size(), replacement) == 0;
      if (!starts && (scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && w.at_origin)))
        t.insert(0, replacement);
      Word nw{std::move(t), w.at_origin};
      if (split) {
        rep.FindAll(nw.text, &m);
        SplitWord(nw, m, SplitBehavior::kMergedWithNext, false, &out);
      } else if (!nw.text.empty()) {
        out.push_back(std::move(nw));
      }
    }
    words->swap(out);
    return Status::Ok();
  }
};

class RegexPre : public PreTokenizer {  // Whitespace (\w+|[^\w\s]+) and WhitespaceSplit
 public:
  std::shared_ptr<Regex> regex;
  bool invert_removed = false;  // WhitespaceSplit: remove whitespace runs
  Status Apply(std::vector<Word>* words) const override {
    std::vector<Word> out;
    std::vector<std::pair<size_t, size_t>> m;
    for (const auto& w : *words) {
      regex->FindAll(w.text, &m);
      SplitWord(w, m, invert_removed ? SplitBehavior::kRemoved : SplitBehavior::kRemoved, !invert_removed, &out);
    }
    words->swap(out);
    return Status::Ok();
  }
};

// ---- decoders -------------------------------------------------------------------------------------------------
class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> steps;
  void Apply(std::vector<std::string>* t) const override {
    for (const auto& s : steps) s->Apply(t);
  }
};
class ByteLevelDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const auto& t : *tokens) {
      size_t start = bytes.size();
      bool ok = true;
      for (size_t p = 0; p < t.size();) {
        int b = ByteLevelCharToByte(NextCodePoint(t, &p));
        if (b < 0) { ok = false; break; }
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {  // a token outside the byte alphabet (an added token) passes through as its UTF-8
        bytes.resize(start);
        bytes += t;
      }
    }
    tokens->assign(1, Utf8Lossy(bytes));
  }
};
class MetaspaceDecoder : public Decoder {
 public:
  std::string replacement = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::kAlways;
  void Apply(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      std::string out;
      size_t pos = 0;
      while (pos < t.size()) {
        if (t.compare(pos, replacement.size(), replacement) == 0) {
          if (!(i == 0 && scheme != PrependScheme::kNever)) out.push_back(' ');
          pos += replacement.size();
        } else {
          out.push_back(t[pos++]);
        }
      }
      t = std::move(out);
    }
  }
};
class ByteFallbackDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (IsValidUtf8(pending)) out.push_back(pending);
      else
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (auto& t : *tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        auto hex = [](char c) {
          if (c >= '0' && c <= '9') return c - '0';
          if (c >= 'A' && c <= 'F') return c - 'A' + 10;
          if (c >= 'a' && c <= 'f') return c - 'a' + 10;
          return -1;
        };
        int h = hex(t[3]), l = hex(t[4]);
        if (h >= 0 && l >= 0) byte = h * 16 + l;
      }
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens->swap(out);
  }
};
class FuseDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string all;
    for (auto& t : *tokens) all += t;
    tokens->assign(1, std::move(all));
  }
};
class StripDecoder : public Decoder {
 public:
  char32_t content = ' ';
  size_t start = 0, stop = 0;
  void Apply(std::vector<std::string>* tokens) const override {
    for (auto& t : *tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, code point)
      for (size_t p = 0; p < t.size();) {
        size_t at = p;
        chars.emplace_back(at, NextCodePoint(t, &p));
      }
      size_t cut_b = 0;
      for (size_t i = 0; i < chars.size() && i < start && chars[i].second == content; ++i) cut_b = i + 1;
      size_t cut_e = chars.size();
      for (size_t i = 0; i < chars.size() && i < stop && chars[chars.size() - 1 - i].second == content; ++i)
        cut_e = chars.size() - i - 1;
      if (cut_e < cut_b) cut_e = cut_b;
      size_t b = cut_b < chars.size() ? chars[cut_b].first : t.size();
      size_t e = cut_e < chars.size() ? chars[cut_e].first : t.size();
      t = t.substr(b, e - b);
    }
  }
};
class ReplaceDecoder : public Decoder {
 public:
  Pattern pattern;
  std::string content;
  void Apply(std::vector<std::string>* tokens) const override {
    for (auto& t : *tokens) t = ReplaceAll(t, pattern, content);
  }
};

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

}  // namespace

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

// ---- builders -------------------------------------------------------------------------------------------------
StatusOr<std::unique_ptr<Normalizer>> BuildNormalizer(const json& j, const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  if (!j.is_object()) return InvalidArgumentError(where + ": must be an object or null");
  std::string type = StrField(j, "type");
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    const json& list = j.contains("normalizers") ? j["normalizers"] : json::array();
    for (size_t i = 0; i < list.size(); ++i) {
      ASSIGN_OR_RETURN(auto n, BuildNormalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]"));
      if (n) seq->steps.push_back(std::move(n));
    }
    return std::unique_ptr<Normalizer>(std::move(seq));
  }
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalForm::kNfc));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalForm::kNfd));
  if (type == "NFKC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalForm::kNfkc));
  if (type == "NFKD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(NormalForm::kNfkd));
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "Prepend") {
    auto p = std::make_unique<PrependNormalizer>();
    p->prepend = StrField(j, "prepend");
    return std::unique_ptr<Normalizer>(std::move(p));
  }
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceNormalizer>();
    ASSIGN_OR_RETURN(r->pattern, ParsePattern(j.value("pattern", json()), where + ".pattern"));
    r->content = StrField(j, "content");
    return std::unique_ptr<Normalizer>(std::move(r));
  }
  if (type == "Strip") {
    auto s = std::make_unique<StripNormalizer>();
    s->left = BoolField(j, "strip_left", true);
    s->right = BoolField(j, "strip_right", true);
    return std::unique_ptr<Normalizer>(std::move(s));
  }
  return InvalidArgumentError(where + ".type: unsupported normalizer '" + type +
                              "' (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip)");
}

StatusOr<std::unique_ptr<PreTokenizer>> BuildPreTokenizer(const json& j, const std::string& where,
                                                          bool* byte_level_last) {
  *byte_level_last = false;
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  if (!j.is_object()) return InvalidArgumentError(where + ": must be an object or null");
  std::string type = StrField(j, "type");
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePre>();
    const json& list = j.contains("pretokenizers") ? j["pretokenizers"] : json::array();
    for (size_t i = 0; i < list.size(); ++i) {
      bool last = false;
      ASSIGN_OR_RETURN(auto p, BuildPreTokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", &last));
      if (!p) continue;
      // Only a ByteLevel that is the very last step may leave the byte mapping to the model.
      if (last && i + 1 != list.size()) {
        static_cast<ByteLevelPre*>(p.get())->map_bytes = true;
        last = false;
      }
      *byte_level_last = last;
      seq->steps.push_back(std::move(p));
    }
    return std::unique_ptr<PreTokenizer>(std::move(seq));
  }
  if (type == "Split") {
    auto s = std::make_unique<SplitPre>();
    ASSIGN_OR_RETURN(s->pattern, ParsePattern(j.value("pattern", json()), where + ".pattern"));
    ASSIGN_OR_RETURN(s->behavior, ParseBehavior(StrField(j, "behavior", "Isolated"), where + ".behavior"));
    s->invert = BoolField(j, "invert", false);
    return std::unique_ptr<PreTokenizer>(std::move(s));
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevelPre>();
    b->add_prefix_space = BoolField(j, "add_prefix_space", true);
    if (BoolField(j, "use_regex", true)) {
      ASSIGN_OR_RETURN(b->regex, Regex::Compile(kGpt2Pattern));
    }
    b->map_bytes = false;
    *byte_level_last = true;
    return std::unique_ptr<PreTokenizer>(std::move(b));
  }
  if (type == "Digits") {
    auto d = std::make_unique<DigitsPre>();
    d->individual = BoolField(j, "individual_digits", false);
    return std::unique_ptr<PreTokenizer>(std::move(d));
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspacePre>();
    m->replacement = StrField(j, "replacement", "\xE2\x96\x81");
    ASSIGN_OR_RETURN(m->scheme, ParseScheme(j, where));
    m->split = BoolField(j, "split", true);
    return std::unique_ptr<PreTokenizer>(std::move(m));
  }
  if (type == "Whitespace" || type == "WhitespaceSplit") {
    auto r = std::make_unique<RegexPre>();
    // Whitespace keeps \w+ and [^\w\s]+ runs; WhitespaceSplit keeps non-whitespace runs.
    ASSIGN_OR_RETURN(r->regex, Regex::Compile(type == "Whitespace" ? R"(\w+|[^\w\s]+)" : R"(\S+)"));
    return std::unique_ptr<PreTokenizer>(std::move(r));
  }
  return InvalidArgumentError(where + ".type: unsupported pre-tokenizer '" + type +
                              "' (supported: Sequence, Split, ByteLevel, Digits, Metaspace, Whitespace, "
                              "WhitespaceSplit)");
}

StatusOr<std::unique_ptr<Decoder>> BuildDecoder(const json& j, const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Decoder>();
  if (!j.is_object()) return InvalidArgumentError(where + ": must be an object or null");
  std::string type = StrField(j, "type");
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    const json& list = j.contains("decoders") ? j["decoders"] : json::array();
    for (size_t i = 0; i < list.size(); ++i) {
      ASSIGN_OR_RETURN(auto d, BuildDecoder(list[i], where + ".decoders[" + std::to_string(i) + "]"));
      if (d) seq->steps.push_back(std::move(d));
    }
    return std::unique_ptr<Decoder>(std::move(seq));
  }
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDecoder>();
    m->replacement = StrField(j, "replacement", "\xE2\x96\x81");
    ASSIGN_OR_RETURN(m->scheme, ParseScheme(j, where));
    return std::unique_ptr<Decoder>(std::move(m));
  }
  if (type == "Strip") {
    auto s = std::make_unique<StripDecoder>();
    std::string c = StrField(j, "content", " ");
    size_t p = 0;
    s->content = c.empty() ? U' ' : NextCodePoint(c, &p);
    s->start = j.value("start", 0);
    s->stop = j.value("stop", 0);
    return std::unique_ptr<Decoder>(std::move(s));
  }
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceDecoder>();
    ASSIGN_OR_RETURN(r->pattern, ParsePattern(j.value("pattern", json()), where + ".pattern"));
    r->content = StrField(j, "content");
    return std::unique_ptr<Decoder>(std::move(r));
  }
  return InvalidArgumentError(where + ".type: unsupported decoder '" + type +
                              "' (supported: Sequence, ByteLevel, ByteFallback, Fuse, Metaspace, Strip, Replace)");
}

}  // namespace anneal::data
