#include "trainer/data/text_pipeline.h"

#include <algorithm>

#include "trainer/data/text_pipeline_internal.h"
#include "trainer/data/utf8.h"

// Pre-tokenizers of tokenizer.json (see text_pipeline.h).
namespace anneal::data {
namespace {

using namespace internal;  // NOLINT: the shared pipeline helpers

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
      if (add_prefix_space && (w.text.empty() || w.text[0] != ' ')) w.text = " " + w.text;
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
  std::shared_ptr<Regex> numeric;  // \p{N}: HF's char::is_numeric (Nd, Nl, No), one match per character
  Status Apply(std::vector<Word>* words) const override {
    std::vector<Word> out;
    std::vector<std::pair<size_t, size_t>> m;
    for (const auto& w : *words) {
      numeric->FindAll(w.text, &m);
      SplitWord(w, m, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false, &out);
    }
    words->swap(out);
    return Status::Ok();
  }
};

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
        t = replacement + t;
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

}  // namespace

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
    ASSIGN_OR_RETURN(d->numeric, Regex::Compile(R"(\p{N})"));
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

}  // namespace anneal::data
