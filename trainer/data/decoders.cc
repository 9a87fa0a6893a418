#include "trainer/data/text_pipeline.h"

#include <algorithm>

#include "trainer/data/text_pipeline_internal.h"
#include "trainer/data/utf8.h"

// Decoders of tokenizer.json (see text_pipeline.h).
namespace anneal::data {
namespace {

using namespace internal;  // NOLINT: the shared pipeline helpers

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

}  // namespace

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
