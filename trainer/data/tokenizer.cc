#include "trainer/data/tokenizer.h"

#include <array>
#include <atomic>
#include <mutex>
#include <bitset>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "trainer/data/utf8.h"

namespace anneal::data {

using nlohmann::json;

uint64_t Fnv1a64(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Byte trie over added tokens for leftmost-longest matching (what HF's aho-corasick LeftmostLongest finds).
struct Tokenizer::Matcher {
  std::unordered_map<uint64_t, int32_t> edges;  // (node << 8 | byte) -> child node
  std::vector<int32_t> terminal{-1};            // node -> index into added_, or -1
  std::bitset<256> first;
  void Add(std::string_view s, int32_t index) {
    if (s.empty()) return;
    int32_t node = 0;
    for (unsigned char c : s) {
      uint64_t key = (static_cast<uint64_t>(node) << 8) | c;
      auto it = edges.find(key);
      if (it == edges.end()) {
        int32_t child = static_cast<int32_t>(terminal.size());
        terminal.push_back(-1);
        edges.emplace(key, child);
        node = child;
      } else {
        node = it->second;
      }
    }
    terminal[node] = index;
    first.set(static_cast<unsigned char>(s[0]));
  }
  bool empty() const { return terminal.size() == 1; }
  // Longest token starting at text[i]: (index, length) or (-1, 0).
  std::pair<int32_t, size_t> LongestAt(std::string_view text, size_t i) const {
    if (!first.test(static_cast<unsigned char>(text[i]))) return {-1, 0};
    int32_t node = 0, best = -1;
    size_t best_len = 0;
    for (size_t k = i; k < text.size(); ++k) {
      auto it = edges.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[k]));
      if (it == edges.end()) break;
      node = it->second;
      if (terminal[node] >= 0) {
        best = terminal[node];
        best_len = k - i + 1;
      }
    }
    return {best, best_len};
  }
};

static bool IsWordByte(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }
static bool IsSpaceByte(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

void Tokenizer::SplitAdded(std::string_view text, size_t base, const Matcher& m, std::vector<Segment>* out) const {
  if (m.empty()) {
    if (!text.empty()) out->push_back({text, -1, base});
    return;
  }
  size_t prev = 0;
  for (size_t i = 0; i < text.size();) {
    auto [index, len] = m.LongestAt(text, i);
    if (index < 0) { ++i; continue; }
    const AddedToken& t = added_[index];
    size_t b = i, e = i + len;
    if (t.single_word && ((b > 0 && IsWordByte(text[b - 1])) || (e < text.size() && IsWordByte(text[e])))) {
      ++i;
      continue;
    }
    if (t.lstrip) while (b > prev && IsSpaceByte(text[b - 1])) --b;
    if (t.rstrip) while (e < text.size() && IsSpaceByte(text[e])) ++e;
    if (b > prev) out->push_back({text.substr(prev, b - prev), -1, base + prev});
    out->push_back({text.substr(b, e - b), t.id, base + b});
    prev = i = e;
  }
  if (prev < text.size()) out->push_back({text.substr(prev), -1, base + prev});
}

// Pre-token word -> ids, shared by all threads of this tokenizer (sharded locks: threads rarely meet), so a
// batch on fresh threads still starts warm. Bounded: a shard that grows past its share is cleared.
struct Tokenizer::WordCache {
  static constexpr size_t kShards = 64;
  static constexpr size_t kMaxPerShard = 1 << 14;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
  };
  std::array<Shard, kShards> shards;
  Shard& For(std::string_view word) { return shards[(StringHash{}(word) >> 7) % kShards]; }
};

Tokenizer::Tokenizer() : word_cache_(std::make_unique<WordCache>()) {}
Tokenizer::~Tokenizer() = default;

static constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // ▁

void Tokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  bool cacheable = word.size() < 256;  // long words (whitespace runs, CJK runs) rarely repeat
  if (cacheable) {
    WordCache::Shard& shard = word_cache_->For(word);
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.words.find(word);
    if (it != shard.words.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t before = out->size();
  model_.TokenizeWord(word, byte_level_, out);
  if (cacheable) {
    WordCache::Shard& shard = word_cache_->For(word);
    std::lock_guard<std::mutex> lock(shard.mu);
    if (shard.words.size() >= WordCache::kMaxPerShard) shard.words.clear();
    shard.words.emplace(std::string(word), std::vector<int32_t>(out->begin() + before, out->end()));
  }
}

Status Tokenizer::EncodePlain(std::string_view text, bool at_origin, std::vector<int32_t>* out) const {
  thread_local std::vector<Word> words;
  words.clear();
  words.push_back({std::string(text), at_origin});
  if (pre_tokenizer_) RETURN_IF_ERROR(pre_tokenizer_->Apply(&words));
  for (const Word& w : words) {
    if (!split_at_word_starts_) {
      EncodeWord(w.text, out);
      continue;
    }
    // No vocab token spans "x▁" (checked at load), so BPE never merges across the start of a "▁word":
    // cutting there changes nothing but makes words short and cacheable.
    std::string_view text = w.text;
    size_t start = 0;
    for (size_t p = 1; p + 3 <= text.size(); ++p) {
      if (text.compare(p, 3, kMetaspace) == 0 && !(p >= 3 && text.compare(p - 3, 3, kMetaspace) == 0) && p > start) {
        EncodeWord(text.substr(start, p - start), out);
        start = p;
      }
    }
    EncodeWord(text.substr(start), out);
  }
  return Status::Ok();
}

StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view input, bool add_special_tokens) const {
  std::string repaired;
  std::string_view text = input;
  if (!IsValidUtf8(input)) {
    repaired = Utf8Lossy(input);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special_tokens) ids.insert(ids.end(), post_prefix_.begin(), post_prefix_.end());
  std::vector<Segment> raw;
  SplitAdded(text, 0, *raw_matcher_, &raw);
  for (const Segment& seg : raw) {
    if (seg.added_id >= 0) {
      ids.push_back(seg.added_id);
      continue;
    }
    std::string normalized;
    std::string_view piece = seg.text;
    if (normalizer_) {
      normalized = std::string(seg.text);
      RETURN_IF_ERROR(normalizer_->Apply(&normalized));
      piece = normalized;
    }
    std::vector<Segment> sub;
    SplitAdded(piece, 0, *normalized_matcher_, &sub);
    for (const Segment& s : sub) {
      if (s.added_id >= 0) ids.push_back(s.added_id);
      else RETURN_IF_ERROR(EncodePlain(s.text, seg.offset == 0 && s.offset == 0, &ids));
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), post_suffix_.begin(), post_suffix_.end());
  return ids;
}

StatusOr<std::vector<std::vector<int32_t>>> Tokenizer::EncodeBatch(const std::vector<std::string>& texts, int threads,
                                                                  bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(std::max<size_t>(1, texts.size())));
  std::atomic<size_t> next{0};
  std::vector<Status> errors(threads);
  auto work = [&](int t) {
    for (size_t i; (i = next.fetch_add(1)) < texts.size();) {
      auto r = Encode(texts[i], add_special_tokens);
      if (!r.ok()) { errors[t] = r.status().WithContext(fmt::format("text {}", i)); return; }
      out[i] = std::move(*r);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors) RETURN_IF_ERROR(e);
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto a = added_by_id_.find(id);
    if (a != added_by_id_.end()) {
      if (skip_special_tokens && added_[a->second].special) continue;
      tokens.push_back(added_[a->second].content);
      continue;
    }
    const std::string& t = model_.IdToToken(id);
    if (!t.empty()) tokens.push_back(t);
  }
  if (!decoder_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  decoder_->Apply(&tokens);
  std::string text;
  for (auto& t : tokens) text += t;
  return text;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  auto it = added_by_content_.find(token);
  if (it != added_by_content_.end()) return it->second;
  return model_.TokenToId(token);
}

std::string Tokenizer::IdToToken(int32_t id) const {
  auto a = added_by_id_.find(id);
  if (a != added_by_id_.end()) return added_[a->second].content;
  return model_.IdToToken(id);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  auto a = added_by_id_.find(id);
  return a != added_by_id_.end() && added_[a->second].special;
}

int32_t Tokenizer::vocab_size() const {
  int32_t n = model_.id_limit();
  for (const auto& t : added_) n = std::max(n, t.id + 1);
  return n;
}

int32_t Tokenizer::AddSpecialToken(const std::string& content) {
  auto it = added_by_content_.find(content);
  if (it != added_by_content_.end()) {
    added_[added_by_id_[it->second]].special = true;
    return it->second;
  }
  AddedToken t;
  t.content = content;
  t.special = true;
  t.normalized = false;
  auto existing = model_.TokenToId(content);
  t.id = existing ? *existing : vocab_size();
  added_by_content_[content] = t.id;
  added_by_id_[t.id] = added_.size();
  added_.push_back(t);
  fingerprint_ = Fnv1a64("+" + content, fingerprint_);
  RebuildMatchers();
  return t.id;
}

void Tokenizer::RebuildMatchers() {
  auto raw = std::make_shared<Matcher>();
  auto norm = std::make_shared<Matcher>();
  for (size_t i = 0; i < added_.size(); ++i) {
    // HF: special tokens are never normalized, whatever their flag says.
    bool normalized = added_[i].normalized && !added_[i].special;
    (normalized ? norm : raw)->Add(added_[i].content, static_cast<int32_t>(i));
  }
  raw_matcher_ = raw;
  normalized_matcher_ = norm;
}

static std::string TokenName(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

static StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFoundError("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

StatusOr<std::shared_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  namespace fs = std::filesystem;
  std::string file = path, config;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    file = (fs::path(path) / "tokenizer.json").string();
    if (!fs::exists(file, ec)) return NotFoundError("no tokenizer.json in " + path);
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  fs::path dir = fs::path(file).parent_path();
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    if (fs::exists(dir / name, ec)) {
      ASSIGN_OR_RETURN(config, ReadFile((dir / name).string()));
      break;
    }
  }
  return FromJsonText(text, file, config);
}

StatusOr<std::shared_ptr<Tokenizer>> Tokenizer::FromJsonText(std::string_view json_text, const std::string& source,
                                                             std::string_view config_text) {
  try {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError(source + ": not a JSON object");
  auto tok = std::shared_ptr<Tokenizer>(new Tokenizer());
  tok->fingerprint_ = Fnv1a64(config_text, Fnv1a64(json_text));
  auto ctx = [&](const Status& s) { return s.WithContext(source); };

  auto model = BpeModel::FromJson(j.value("model", json()), "model");
  if (!model.ok()) return ctx(model.status());
  tok->model_ = std::move(*model);
  auto norm = BuildNormalizer(j.value("normalizer", json()), "normalizer");
  if (!norm.ok()) return ctx(norm.status());
  tok->normalizer_ = std::move(*norm);
  auto pre = BuildPreTokenizer(j.value("pre_tokenizer", json()), "pre_tokenizer", &tok->byte_level_);
  if (!pre.ok()) return ctx(pre.status());
  tok->pre_tokenizer_ = std::move(*pre);
  auto dec = BuildDecoder(j.value("decoder", json()), "decoder");
  if (!dec.ok()) return ctx(dec.status());
  tok->decoder_ = std::move(*dec);

  if (!tok->byte_level_) {
    bool spans = false;  // does any vocab token contain "x▁" (x not ▁)?
    for (int32_t id = 0; id < tok->model_.id_limit() && !spans; ++id) {
      std::string_view t = tok->model_.IdToToken(id);
      for (size_t p = t.find(kMetaspace, 1); p != std::string_view::npos; p = t.find(kMetaspace, p + 1))
        if (!(p >= 3 && t.compare(p - 3, 3, kMetaspace) == 0)) { spans = true; break; }
    }
    tok->split_at_word_starts_ = !spans;
  }

  const json& added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"] : json::array();
  for (size_t i = 0; i < added.size(); ++i) {
    const json& a = added[i];
    if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string())
      return InvalidArgumentError(fmt::format("{}: added_tokens[{}] needs id and content", source, i));
    AddedToken t;
    t.id = a["id"].get<int32_t>();
    t.content = a["content"].get<std::string>();
    t.special = a.value("special", false);
    t.normalized = a.value("normalized", !t.special);
    t.lstrip = a.value("lstrip", false);
    t.rstrip = a.value("rstrip", false);
    t.single_word = a.value("single_word", false);
    tok->added_by_content_[t.content] = t.id;
    tok->added_by_id_[t.id] = tok->added_.size();
    tok->added_.push_back(t);
  }
  tok->RebuildMatchers();

  // Post-processor: TemplateProcessing's single sequence ($A between special tokens), possibly in a Sequence.
  std::function<Status(const json&, const std::string&)> post = [&](const json& p, const std::string& where) -> Status {
    if (p.is_null()) return Status::Ok();
    std::string type = p.value("type", std::string());
    if (type == "Sequence") {
      const json& list = p.value("processors", json::array());
      for (size_t i = 0; i < list.size(); ++i) RETURN_IF_ERROR(post(list[i], fmt::format("{}.processors[{}]", where, i)));
      return Status::Ok();
    }
    if (type == "ByteLevel") return Status::Ok();  // offsets only
    if (type != "TemplateProcessing")
      return InvalidArgumentError(where + ".type: unsupported post-processor '" + type +
                                  "' (supported: TemplateProcessing, ByteLevel, Sequence)");
    bool seen_a = false;
    for (const json& item : p.value("single", json::array())) {
      if (item.contains("Sequence")) { seen_a = true; continue; }
      if (!item.contains("SpecialToken")) continue;
      std::string name = item["SpecialToken"].value("id", std::string());
      const json& st = p.value("special_tokens", json::object());
      if (!st.contains(name)) return InvalidArgumentError(where + ": special token '" + name + "' is not defined");
      for (const json& id : st[name].value("ids", json::array()))
        (seen_a ? tok->post_suffix_ : tok->post_prefix_).push_back(id.get<int32_t>());
    }
    return Status::Ok();
  };
  Status ps = post(j.value("post_processor", json()), "post_processor");
  if (!ps.ok()) return ctx(ps);

  if (!config_text.empty()) {
    json c = json::parse(config_text, nullptr, false);
    if (c.is_object()) {
      tok->bos_token_ = TokenName(c.value("bos_token", json()));
      tok->eos_token_ = TokenName(c.value("eos_token", json()));
      tok->pad_token_ = TokenName(c.value("pad_token", json()));
    }
  }
  if (!tok->bos_token_.empty()) tok->bos_id_ = tok->TokenToId(tok->bos_token_);
  if (!tok->eos_token_.empty()) tok->eos_id_ = tok->TokenToId(tok->eos_token_);
  if (!tok->pad_token_.empty()) tok->pad_id_ = tok->TokenToId(tok->pad_token_);
  return tok;
  } catch (const json::exception& e) {
    // A field of the wrong type (a list where a string belongs, ...): nlohmann's value()/get() throw.
    return InvalidArgumentError(source + ": unexpected JSON value: " + std::string(e.what()));
  }
}

}  // namespace anneal::data
