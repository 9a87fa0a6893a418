#include "trainer/data/bpe.h"

#include <queue>

#include <fmt/format.h>

#include "trainer/data/text_pipeline.h"
#include "trainer/data/utf8.h"

namespace anneal::data {

// Largest vocabularies in use are ~256k tokens; a table of 16M ids is the most a tokenizer.json may ask for.
constexpr int64_t kMaxTokenId = int64_t{1} << 24;

static uint64_t MergeKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
static uint64_t Mix(uint64_t x) {  // splitmix64 finalizer: spreads adjacent ids over the table
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull; x ^= x >> 27; x *= 0x94d049bb133111ebull; x ^= x >> 31;
  return x;
}

const BpeModel::MergeSlot* BpeModel::FindMerge(int32_t a, int32_t b) const {
  uint64_t key = MergeKey(a, b);
  for (uint64_t i = Mix(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    const MergeSlot& s = merges_[i];
    if (s.key == key) return &s;
    if (s.key == ~0ull) return nullptr;
  }
}

void BpeModel::InsertMerge(int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
  uint64_t key = MergeKey(a, b);
  for (uint64_t i = Mix(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    MergeSlot& s = merges_[i];
    if (s.key == key) return;  // a duplicate merge keeps its first (lowest) rank
    if (s.key == ~0ull) {
      s = {key, rank, new_id};
      return;
    }
  }
}

const std::string& BpeModel::IdToToken(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < id_limit() ? id_to_token_[id] : kEmpty;
}

StatusOr<BpeModel> BpeModel::FromJson(const nlohmann::json& m, const std::string& where) {
  if (!m.is_object()) return InvalidArgumentError(where + ": missing model object");
  std::string type = m.value("type", std::string("BPE"));
  if (type != "BPE")
    return InvalidArgumentError(where + ".type: unsupported model '" + type + "' (supported: BPE)");
  if (m.contains("continuing_subword_prefix") && !m["continuing_subword_prefix"].is_null())
    return InvalidArgumentError(where + ".continuing_subword_prefix: not supported");
  if (m.contains("end_of_word_suffix") && !m["end_of_word_suffix"].is_null())
    return InvalidArgumentError(where + ".end_of_word_suffix: not supported");
  if (!m.contains("vocab") || !m["vocab"].is_object()) return InvalidArgumentError(where + ".vocab: missing object");
  BpeModel bpe;
  int32_t max_id = -1;
  bpe.vocab_.reserve(m["vocab"].size() * 2);
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer()) return InvalidArgumentError(where + ".vocab['" + it.key() + "']: not an id");
    // Ids index a table of max id + 1 entries: negative or absurd ids are refused, never wrapped or allocated.
    const int64_t wide = it.value().get<int64_t>();
    if (wide < 0 || wide >= kMaxTokenId) {
      return InvalidArgumentError(fmt::format("{}.vocab['{}']: id {} is outside [0, {})", where, it.key(), wide,
                                              kMaxTokenId));
    }
    const int32_t id = static_cast<int32_t>(wide);
    bpe.vocab_.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  bpe.id_to_token_.resize(max_id + 1);
  for (const auto& [tok, id] : bpe.vocab_) bpe.id_to_token_[id] = tok;

  const auto& merges = m.contains("merges") ? m["merges"] : nlohmann::json::array();
  size_t cap = 16;
  while (cap < merges.size() * 2 + 16) cap <<= 1;
  bpe.merges_.assign(cap, MergeSlot{});
  bpe.merge_mask_ = cap - 1;
  for (size_t r = 0; r < merges.size(); ++r) {
    std::string a, b;
    const auto& e = merges[r];
    if (e.is_string()) {  // "left right"
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) return InvalidArgumentError(fmt::format("{}.merges[{}]: '{}' has no space", where, r, s));
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return InvalidArgumentError(fmt::format("{}.merges[{}]: expected \"a b\" or [a, b]", where, r));
    }
    auto ia = bpe.vocab_.find(a), ib = bpe.vocab_.find(b), iab = bpe.vocab_.find(a + b);
    if (ia == bpe.vocab_.end() || ib == bpe.vocab_.end() || iab == bpe.vocab_.end())
      return InvalidArgumentError(fmt::format("{}.merges[{}]: '{} {}' uses a token missing from the vocab", where, r, a, b));
    bpe.InsertMerge(ia->second, ib->second, static_cast<uint32_t>(r), iab->second);
  }

  bpe.byte_fallback_ = m.value("byte_fallback", false);
  bpe.fuse_unk_ = m.value("fuse_unk", false);
  bpe.ignore_merges_ = m.value("ignore_merges", false);
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto u = bpe.TokenToId(m["unk_token"].get<std::string>());
    if (u) bpe.unk_id_ = *u;
  }
  const auto& alpha = ByteLevelAlphabet();
  bpe.byte_ids_.assign(256, -1);
  bpe.byte_fallback_ids_.assign(256, -1);
  bpe.ascii_ids_.assign(128, -1);
  for (int c = 0; c < 128; ++c)
    if (auto id = bpe.TokenToId(std::string(1, static_cast<char>(c)))) bpe.ascii_ids_[c] = *id;
  for (int b = 0; b < 256; ++b) {
    if (auto id = bpe.TokenToId(alpha[b])) bpe.byte_ids_[b] = *id;
    if (auto id = bpe.TokenToId(fmt::format("<0x{:02X}>", b))) bpe.byte_fallback_ids_[b] = *id;
  }
  return bpe;
}

void BpeModel::TokenizeWord(std::string_view word, bool byte_level, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    std::string mapped;
    std::string_view key = word;
    if (byte_level) {
      const auto& alpha = ByteLevelAlphabet();
      for (unsigned char c : word) mapped += alpha[c];
      key = mapped;
    }
    if (auto id = TokenToId(key)) {
      out->push_back(*id);
      return;
    }
  }
  struct Sym { int32_t id; int32_t prev; int32_t next; };
  thread_local std::vector<Sym> syms;
  syms.clear();
  auto push = [&](int32_t id) {
    int32_t n = static_cast<int32_t>(syms.size());
    syms.push_back({id, n - 1, -1});
    if (n > 0) syms[n - 1].next = n;
  };
  if (byte_level) {
    for (unsigned char c : word) {
      int32_t id = byte_ids_[c];
      if (id >= 0) push(id);
      else if (unk_id_) push(*unk_id_);
    }
  } else {
    bool prev_unk = false;
    for (size_t pos = 0; pos < word.size();) {
      size_t len = Utf8LeadLength(static_cast<unsigned char>(word[pos]));
      if (pos + len > word.size()) len = word.size() - pos;
      std::string_view ch = word.substr(pos, len);
      pos += len;
      if (len == 1 && static_cast<unsigned char>(ch[0]) < 128 && ascii_ids_[ch[0]] >= 0) {  // fast path
        push(ascii_ids_[ch[0]]);
        prev_unk = false;
        continue;
      }
      if (auto id = TokenToId(ch)) {
        push(*id);
        prev_unk = false;
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (unsigned char c : ch) all = all && byte_fallback_ids_[c] >= 0;
        if (all) {
          for (unsigned char c : ch) push(byte_fallback_ids_[c]);
          prev_unk = false;
          continue;
        }
      }
      if (unk_id_) {
        if (!(fuse_unk_ && prev_unk)) push(*unk_id_);
        prev_unk = true;
      }
    }
  }
  if (syms.size() > 1) {
    // A candidate remembers the pair it was made for: when that pair is still there it is valid without a
    // second hash lookup; otherwise HF's rule decides (the current pair must merge into the same token).
    struct Cand {
      uint32_t rank; int32_t pos; int32_t new_id; int32_t left_id; int32_t right_pos; int32_t right_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    thread_local std::vector<Cand> heap;
    heap.clear();
    auto consider = [&](int32_t p) {
      if (p < 0 || syms[p].next < 0) return;
      int32_t r = syms[p].next;
      if (const MergeSlot* m = FindMerge(syms[p].id, syms[r].id)) {
        heap.push_back({m->rank, p, m->new_id, syms[p].id, r, syms[r].id});
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) consider(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      Cand c = heap.back();
      heap.pop_back();
      Sym& s = syms[c.pos];
      if (s.id < 0 || s.next < 0) continue;  // dead, or nothing to the right any more
      if (s.id != c.left_id || s.next != c.right_pos || syms[c.right_pos].id != c.right_id) {
        const MergeSlot* m = FindMerge(s.id, syms[s.next].id);
        if (m == nullptr || m->new_id != c.new_id) continue;  // stale
      }
      int32_t right = s.next;
      s.id = c.new_id;
      s.next = syms[right].next;
      if (s.next >= 0) syms[s.next].prev = c.pos;
      syms[right].id = -1;  // dead
      consider(s.prev);
      consider(c.pos);
    }
  }
  for (size_t i = 0; i < syms.size(); i = syms[i].next < 0 ? syms.size() : static_cast<size_t>(syms[i].next))
    out->push_back(syms[i].id);
}

}  // namespace anneal::data
