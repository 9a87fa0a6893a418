#include "trainer/data/numpy_random.h"

#include <algorithm>
#include <array>

namespace anneal::data {
namespace {

uint64_t Mask(uint64_t max) {
  uint64_t m = max;
  m |= m >> 1;
  m |= m >> 2;
  m |= m >> 4;
  m |= m >> 8;
  m |= m >> 16;
  m |= m >> 32;
  return m;
}

// numpy/random/bit_generator.pyx SeedSequence (pool size 4), all arithmetic mod 2^32.
constexpr uint32_t kInitA = 0x43b0d7e5, kMultA = 0x931e8875, kInitB = 0x8b51f9dd, kMultB = 0x58f38ded;
constexpr uint32_t kMixMultL = 0xca01f9dd, kMixMultR = 0x4973f715;
constexpr int kPoolSize = 4;

uint32_t HashMix(uint32_t value, uint32_t* hash_const) {
  value ^= *hash_const;
  *hash_const *= kMultA;
  value *= *hash_const;
  value ^= value >> 16;
  return value;
}

uint32_t Mix(uint32_t x, uint32_t y) {
  uint32_t r = kMixMultL * x - kMixMultR * y;
  r ^= r >> 16;
  return r;
}

// SeedSequence(seed).generate_state(4, np.uint64).
std::array<uint64_t, 4> SeedSequenceState(uint64_t seed) {
  std::vector<uint32_t> entropy;  // the integer's 32-bit words, least significant first ([0] for 0)
  do {
    entropy.push_back(static_cast<uint32_t>(seed));
    seed >>= 32;
  } while (seed != 0);
  std::array<uint32_t, kPoolSize> pool{};
  uint32_t hash_const = kInitA;
  for (int i = 0; i < kPoolSize; ++i)
    pool[i] = HashMix(i < static_cast<int>(entropy.size()) ? entropy[i] : 0, &hash_const);
  for (int src = 0; src < kPoolSize; ++src)
    for (int dst = 0; dst < kPoolSize; ++dst)
      if (src != dst) pool[dst] = Mix(pool[dst], HashMix(pool[src], &hash_const));
  for (size_t src = kPoolSize; src < entropy.size(); ++src)
    for (int dst = 0; dst < kPoolSize; ++dst) pool[dst] = Mix(pool[dst], HashMix(entropy[src], &hash_const));
  std::array<uint32_t, 8> words{};
  uint32_t hb = kInitB;
  for (int i = 0; i < 8; ++i) {
    uint32_t v = pool[i % kPoolSize];
    v ^= hb;
    hb *= kMultB;
    v *= hb;
    v ^= v >> 16;
    words[i] = v;
  }
  std::array<uint64_t, 4> out{};
  for (int i = 0; i < 4; ++i) out[i] = words[2 * i] | (static_cast<uint64_t>(words[2 * i + 1]) << 32);
  return out;
}

constexpr unsigned __int128 kPcgMult =
    (static_cast<unsigned __int128>(2549297995355413924ULL) << 64) + 4865540595714422341ULL;

}  // namespace

uint64_t NumpyLegacyRandom::Interval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = Mask(max), v;
  if (max <= 0xffffffffULL) {
    while ((v = (static_cast<uint64_t>(mt_()) & mask)) > max) {
    }
  } else {
    auto next64 = [&] { return (static_cast<uint64_t>(mt_()) << 32) | mt_(); };
    while ((v = (next64() & mask)) > max) {
    }
  }
  return v;
}

std::vector<int64_t> NumpyLegacyRandom::Permutation(int64_t n) {
  std::vector<int64_t> a(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) a[i] = i;
  for (int64_t i = n - 1; i >= 1; --i) std::swap(a[i], a[Interval(static_cast<uint64_t>(i))]);
  return a;
}

std::vector<int64_t> NumpyLegacyRandom::Choice(int64_t n, int64_t size) {
  std::vector<int64_t> out;
  for (int64_t k = 0; k < size; ++k) out.push_back(static_cast<int64_t>(Interval(static_cast<uint64_t>(n - 1))));
  return out;
}

uint32_t NumpyLegacyRandom::RandintUint32(uint64_t high) {
  if (high >= (uint64_t{1} << 32)) return mt_();  // rng == 0xFFFFFFFF: the raw 32-bit draw
  return static_cast<uint32_t>(Interval(high - 1));
}

NumpyGenerator::NumpyGenerator(uint64_t seed) {
  std::array<uint64_t, 4> s = SeedSequenceState(seed);
  unsigned __int128 init_state = (static_cast<unsigned __int128>(s[0]) << 64) | s[1];
  unsigned __int128 init_seq = (static_cast<unsigned __int128>(s[2]) << 64) | s[3];
  // pcg_setseq_128_srandom_r
  state_ = 0;
  inc_ = (init_seq << 1) | 1;
  state_ = state_ * kPcgMult + inc_;
  state_ += init_state;
  state_ = state_ * kPcgMult + inc_;
}

uint64_t NumpyGenerator::NextUint64() {
  state_ = state_ * kPcgMult + inc_;
  uint64_t x = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
  unsigned rot = static_cast<unsigned>(state_ >> 122);
  return (x >> rot) | (x << ((64 - rot) & 63));
}

uint32_t NumpyGenerator::NextUint32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return uinteger_;
  }
  const uint64_t next = NextUint64();
  has_uint32_ = true;
  uinteger_ = static_cast<uint32_t>(next >> 32);
  return static_cast<uint32_t>(next & 0xffffffffu);
}

uint64_t NumpyGenerator::Interval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  for (int shift : {1, 2, 4, 8, 16, 32}) mask |= mask >> shift;
  uint64_t value = 0;
  if (max <= 0xffffffffu) {
    while ((value = (NextUint32() & mask)) > max) {
    }
  } else {
    while ((value = (NextUint64() & mask)) > max) {
    }
  }
  return value;
}

std::vector<int64_t> NumpyGenerator::Permutation(int64_t n) {
  std::vector<int64_t> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<size_t>(Interval(static_cast<uint64_t>(i)));
    std::swap(out[static_cast<size_t>(i)], out[j]);
  }
  return out;
}

double NumpyGenerator::Random() {
  return static_cast<double>(NextUint64() >> 11) * (1.0 / 9007199254740992.0);
}

std::vector<int64_t> NumpyGenerator::Choice(int64_t n, int64_t size, const std::vector<double>& probs) {
  std::vector<double> cdf(static_cast<size_t>(n));
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) cdf[i] = acc += probs[i];
  double last = cdf.back();
  for (double& c : cdf) c /= last;
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(size));
  for (int64_t k = 0; k < size; ++k) {
    double u = Random();
    out.push_back(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
  }
  return out;
}

}  // namespace anneal::data
