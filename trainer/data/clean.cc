#include "trainer/data/clean.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "trainer/data/language_filter.h"
#include "trainer/data/numpy_random.h"
#include "trainer/data/pii.h"
#include "trainer/data/script_filter.h"
#include "trainer/data/utf8.h"

namespace anneal::data {
namespace {

bool StartsWithNoCase(std::string_view s, size_t at, std::string_view prefix) {
  if (s.size() - at < prefix.size()) return false;
  for (size_t k = 0; k < prefix.size(); ++k)
    if (std::tolower(static_cast<unsigned char>(s[at + k])) != prefix[k]) return false;
  return true;
}

size_t FindNoCase(std::string_view s, size_t from, std::string_view needle) {
  for (size_t i = from; i + needle.size() <= s.size(); ++i)
    if (StartsWithNoCase(s, i, needle)) return i;
  return std::string_view::npos;
}

// Decodes the entity at s[i] == '&'; returns its length (0: not an entity, the '&' is kept).
size_t DecodeEntity(std::string_view s, size_t i, std::string* out) {
  static const std::pair<std::string_view, std::string_view> kNamed[] = {
      {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}, {"&nbsp;", "\xC2\xA0"}};
  for (const auto& [name, value] : kNamed)
    if (s.substr(i, name.size()) == name) {
      out->append(value);
      return name.size();
    }
  if (i + 2 < s.size() && s[i + 1] == '#') {
    bool hex = s[i + 2] == 'x' || s[i + 2] == 'X';
    size_t j = i + (hex ? 3 : 2);
    uint32_t cp = 0;
    size_t digits = 0;
    for (; j < s.size() && digits < 8 && std::isxdigit(static_cast<unsigned char>(s[j])); ++j, ++digits) {
      if (!hex && !std::isdigit(static_cast<unsigned char>(s[j]))) break;
      cp =
          cp * (hex ? 16 : 10) + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(s[j]))
                                                           ? s[j] - '0'
                                                           : std::tolower(static_cast<unsigned char>(s[j])) - 'a' + 10);
    }
    if (digits > 0 && j < s.size() && s[j] == ';') {
      if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
      AppendUtf8(static_cast<char32_t>(cp), out);
      return j + 1 - i;
    }
  }
  return 0;
}

bool IsBlockTag(std::string_view s, size_t lt) {
  size_t k = lt + 1;
  if (k < s.size() && s[k] == '/') ++k;
  for (std::string_view tag : {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"}) {
    if (StartsWithNoCase(s, k, tag)) {
      size_t end = k + tag.size();
      if (end < s.size() && (s[end] == '>' || s[end] == ' ' || s[end] == '/' || s[end] == '\t' || s[end] == '\n'))
        return true;
    }
  }
  return false;
}

// SHA-1 of the bytes, first 4 bytes little-endian: datasketch.hashfunc.sha1_hash32.
// One fetched SHA-1 and one digest context per thread: EVP_Digest(..., EVP_sha1()) fetches the algorithm on
// every call under OpenSSL 3, which was most of near-dedup's time (bench/data/clean_bench.py).
uint32_t Sha1Hash32(std::string_view bytes) {
  struct Sha1 {
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA1", nullptr);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Sha1() {
      EVP_MD_CTX_free(ctx);
      EVP_MD_free(md);
    }
  };
  thread_local Sha1 sha1;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestInit_ex(sha1.ctx, sha1.md, nullptr);
  EVP_DigestUpdate(sha1.ctx, bytes.data(), bytes.size());
  EVP_DigestFinal_ex(sha1.ctx, digest, &len);
  return static_cast<uint32_t>(digest[0]) | static_cast<uint32_t>(digest[1]) << 8 |
         static_cast<uint32_t>(digest[2]) << 16 | static_cast<uint32_t>(digest[3]) << 24;
}

uint32_t Fmix32(uint32_t h) {  // MurmurHash3's finalizer, datasketch's _fmix(width=32)
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}

// Integral of f over [lo, hi]: 20-point Gauss-Legendre on 256 panels (the integrands are polynomials of degree
// <= num_perm; scipy's quad agrees to ~1e-15, far below the gaps between candidate (b, r) errors).
template <typename F>
double Integrate(F f, double lo, double hi) {
  static const double x[10] = {0.0765265211334973, 0.2277858511416451, 0.3737060887154195, 0.5108670019508271,
                               0.6360536807265150, 0.7463319064601508, 0.8391169718222188, 0.9122344282513259,
                               0.9639719272779138, 0.9931285991850949};
  static const double w[10] = {0.1527533871307258, 0.1491729864726037, 0.1420961093183820, 0.1316886384491766,
                               0.1181945319615184, 0.1019301198172404, 0.0832767415767048, 0.0626720483341091,
                               0.0406014298003869, 0.0176140071391521};
  const int panels = 256;
  double h = (hi - lo) / panels, sum = 0;
  for (int p = 0; p < panels; ++p) {
    double mid = lo + (p + 0.5) * h, half = h / 2;
    for (int k = 0; k < 10; ++k) sum += w[k] * half * (f(mid - half * x[k]) + f(mid + half * x[k]));
  }
  return sum;
}

size_t CodePoints(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string ConversationText(const Conversation& c) {
  std::string t = c.system;
  for (const Message& m : c.messages) {
    if (!t.empty()) t += "\n";
    t += m.content;
  }
  return t;
}

std::string ExactKey(const Conversation& c) {
  std::string k;
  if (c.pretokenized) {
    k = "ids:";
    for (int32_t id : c.input_ids) k += std::to_string(id) + ",";
    k += "labels:";
    for (int32_t id : c.labels) k += std::to_string(id) + ",";
    return k;
  }
  k = c.system;
  for (const Message& m : c.messages) {
    k += '\x1e';
    k += std::string(RoleName(m.role));
    k += '\x1f';
    k += m.content;
  }
  return k;
}

StatusOr<std::string> CleanText(std::string_view s, const CleanOptions& o) {
  std::string t(s);
  if (o.strip_markup) t = StripMarkup(t);
  if (o.normalize == "none") return t;
  NormalForm form = o.normalize == "NFKC"   ? NormalForm::kNfkc
                    : o.normalize == "NFD"  ? NormalForm::kNfd
                    : o.normalize == "NFKD" ? NormalForm::kNfkd
                                            : NormalForm::kNfc;
  return NormalizeUnicode(Utf8Lossy(t), form);
}

}  // namespace

std::string StripMarkup(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '&') {
      size_t n = DecodeEntity(s, i, &out);
      if (n == 0)
        out.push_back(s[i++]);
      else
        i += n;
      continue;
    }
    if (s[i] != '<' || i + 1 >= s.size()) {
      out.push_back(s[i++]);
      continue;
    }
    if (s.substr(i, 4) == "<!--") {
      size_t end = s.find("-->", i + 4);
      i = end == std::string_view::npos ? s.size() : end + 3;
      continue;
    }
    bool dropped_body = false;
    for (std::string_view tag : {"script", "style"}) {
      if (StartsWithNoCase(s, i + 1, tag)) {
        size_t close = FindNoCase(s, i, fmt::format("</{}", tag));
        size_t end = close == std::string_view::npos ? std::string_view::npos : s.find('>', close);
        i = end == std::string_view::npos ? s.size() : end + 1;
        dropped_body = true;
        break;
      }
    }
    if (dropped_body) continue;
    char next = s[i + 1];
    if (!(std::isalpha(static_cast<unsigned char>(next)) || next == '/' || next == '!' || next == '?')) {
      out.push_back(s[i++]);  // a lone '<' (e.g. "a < b") is text
      continue;
    }
    size_t end = s.find('>', i);
    if (end == std::string_view::npos) {
      out.append(s.substr(i));
      break;
    }
    if (IsBlockTag(s, i)) out.push_back('\n');
    i = end + 1;
  }
  return out;
}

std::vector<std::string> CharShingles(std::string_view text, int k) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i)
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  std::vector<std::string> out;
  if (starts.empty()) return out;
  if (static_cast<int>(starts.size()) <= k) return {std::string(text)};
  starts.push_back(text.size());
  for (size_t i = 0; i + k < starts.size(); ++i) out.emplace_back(text.substr(starts[i], starts[i + k] - starts[i]));
  return out;
}

namespace {

// datasketch's affine32 permutations: a = 2 * randint(0, 2^31) + 1, then b = randint(0, 2^32), from
// np.random.RandomState(seed).
struct Permutations {
  std::vector<uint32_t> a, b;
  Permutations(int num_perm, uint32_t seed) : a(num_perm), b(num_perm) {
    NumpyLegacyRandom gen(seed);
    for (int k = 0; k < num_perm; ++k) a[k] = gen.RandintUint32(uint64_t{1} << 31) * 2u + 1u;
    for (int k = 0; k < num_perm; ++k) b[k] = gen.RandintUint32(uint64_t{1} << 32);
  }
  std::vector<uint32_t> Sign(const std::vector<std::string>& shingles) const {
    std::vector<uint32_t> sig(a.size(), std::numeric_limits<uint32_t>::max());
    for (const std::string& sh : shingles) {
      uint32_t h = Fmix32(Sha1Hash32(sh));
      for (size_t k = 0; k < a.size(); ++k) sig[k] = std::min(sig[k], a[k] * h + b[k]);
    }
    return sig;
  }
};

}  // namespace

std::vector<uint32_t> MinHashSignature(const std::vector<std::string>& shingles, int num_perm, uint32_t seed) {
  return Permutations(num_perm, seed).Sign(shingles);
}

std::pair<int, int> LshParameters(double threshold, int num_perm) {
  double best = std::numeric_limits<double>::infinity();
  std::pair<int, int> opt{0, 0};
  for (int b = 1; b <= num_perm; ++b) {
    for (int r = 1; r <= num_perm / b; ++r) {
      double fp = Integrate([&](double s) { return 1 - std::pow(1 - std::pow(s, r), b); }, 0.0, threshold);
      double fn = Integrate([&](double s) { return 1 - (1 - std::pow(1 - std::pow(s, r), b)); }, threshold, 1.0);
      double error = fp * 0.5 + fn * 0.5;
      if (error < best) {
        best = error;
        opt = {b, r};
      }
    }
  }
  return opt;
}

StatusOr<CleanResult> CleanConversations(const std::vector<Conversation>& rows, const CleanOptions& o) {
  static const std::set<std::string> kForms = {"NFC", "NFKC", "NFD", "NFKD", "none"};
  if (!kForms.count(o.normalize))
    return InvalidArgumentError(fmt::format("normalize '{}' (known: NFC, NFKC, NFD, NFKD, none)", o.normalize));
  if (o.near_dedup && !(o.jaccard_threshold > 0 && o.jaccard_threshold < 1))
    return InvalidArgumentError(fmt::format("jaccard threshold {} must be in (0, 1)", o.jaccard_threshold));
  if (o.num_perm < 2 || o.shingle < 1)
    return InvalidArgumentError(fmt::format("num_perm {} must be >= 2 and shingle {} >= 1", o.num_perm, o.shingle));
  ASSIGN_OR_RETURN(const PiiMasker masker, PiiMasker::Create(o.mask_pii));
  std::optional<ScriptFilter> script_filter;
  if (!o.scripts.empty()) {
    ASSIGN_OR_RETURN(script_filter, ScriptFilter::Create(o.scripts, o.script_fraction));
  }
  std::optional<LanguageFilter> language_filter;
  if (!o.languages.empty()) {
    ASSIGN_OR_RETURN(language_filter, LanguageFilter::Create(o.languages, o.language_confidence));
  }
  CleanResult r;
  PiiCounts pii;
  if (o.near_dedup) std::tie(r.lsh_bands, r.lsh_rows) = LshParameters(o.jaccard_threshold, o.num_perm);
  std::unordered_map<std::string, std::string> exact;  // key -> kept origin
  std::vector<std::unordered_map<std::string, std::vector<size_t>>> bands(r.lsh_bands);
  const Permutations perms(o.near_dedup ? o.num_perm : 0, o.seed);
  auto drop = [&](const Conversation& c, std::string reason, std::string of = "") {
    ++r.dropped_by_reason[reason];
    r.dropped.push_back({c.origin, std::move(reason), std::move(of)});
  };
  for (const Conversation& in : rows) {
    Conversation c = in;
    if (!c.pretokenized) {
      RETURN_IF_ERROR(CleanText(c.system, o).status().WithContext(c.origin));
      c.system = *CleanText(c.system, o);
      for (Message& m : c.messages) {
        ASSIGN_OR_RETURN(m.content, CleanText(m.content, o));
      }
      if (!masker.empty()) {
        c.system = masker.Mask(c.system, &pii);
        for (Message& m : c.messages) m.content = masker.Mask(m.content, &pii);
      }
      size_t n = CodePoints(ConversationText(c));
      if (o.min_chars > 0 && static_cast<int64_t>(n) < o.min_chars) {
        drop(c, "too_short");
        continue;
      }
      if (o.max_chars > 0 && static_cast<int64_t>(n) > o.max_chars) {
        drop(c, "too_long");
        continue;
      }
      if (script_filter && !script_filter->Keeps(ConversationText(c))) {
        drop(c, "wrong_script");
        continue;
      }
      if (language_filter) {
        const LanguageDetection d = language_filter->Detect(ConversationText(c));
        if (!language_filter->Keeps(d)) {
          drop(c, "wrong_language");
          r.dropped.back().language = d.language;
          r.dropped.back().language_confidence = d.confidence;
          ++r.dropped_by_language[d.language];
          continue;
        }
      }
    }
    std::string key = ExactKey(c);
    if (o.exact_dedup) {
      auto it = exact.find(key);
      if (it != exact.end()) {
        drop(c, "exact_duplicate", it->second);
        continue;
      }
    }
    if (o.near_dedup && !c.pretokenized) {
      std::vector<uint32_t> sig = perms.Sign(CharShingles(ConversationText(c), o.shingle));
      std::vector<std::string> band_keys(r.lsh_bands);
      std::optional<size_t> match;
      for (int b = 0; b < r.lsh_bands; ++b) {
        band_keys[b].assign(reinterpret_cast<const char*>(sig.data() + b * r.lsh_rows), r.lsh_rows * sizeof(uint32_t));
        auto it = bands[b].find(band_keys[b]);
        if (it != bands[b].end() && !match) match = it->second.front();
      }
      if (match) {
        drop(c, "near_duplicate", r.kept[*match].origin);
        continue;
      }
      for (int b = 0; b < r.lsh_bands; ++b) bands[b][band_keys[b]].push_back(r.kept.size());
    }
    exact.emplace(std::move(key), c.origin);
    r.kept.push_back(std::move(c));
  }
  r.pii_masked = std::move(pii.by_kind);
  return r;
}

}  // namespace anneal::data
