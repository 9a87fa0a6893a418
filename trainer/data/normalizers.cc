#include "trainer/data/text_pipeline.h"

#include <algorithm>

#include "trainer/data/text_pipeline_internal.h"
#include "trainer/data/utf8.h"

// Normalizers of tokenizer.json (see text_pipeline.h).
namespace anneal::data {
namespace {

using namespace internal;  // NOLINT: the shared pipeline helpers

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
    if (!t->empty()) *t = prepend + *t;  // HF: only non-empty strings get the prefix
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

}  // namespace

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

}  // namespace anneal::data
