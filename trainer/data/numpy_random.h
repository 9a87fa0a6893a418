// NumPy's random streams, bit for bit, for the dataset steps LLaMA-Factory and HF datasets randomize.
//
//   NumpyLegacyRandom  np.random.seed(s) then np.random.permutation(n) / np.random.choice(n, k): MT19937 seeded
//                      by init_genrand (std::mt19937 is the same generator and seeding), the legacy
//                      random_interval shuffle and masked-rejection randint. LLaMA-Factory's num_samples uses
//                      this global stream after transformers.set_seed(seed).
//   NumpyGenerator     np.random.default_rng(s): SeedSequence(s) -> PCG64 (XSL-RR 128/64); random() doubles
//                      ((next64 >> 11) * 2^-53) and choice(n, size, p) as cdf.searchsorted(u, side='right') over
//                      p.cumsum() / its last value. HF datasets' interleave_datasets draws sources this way.
//                      permutation(n): arange(n) shuffled from the end with random_interval over next_uint32
//                      (PCG64 hands out the two halves of one 64-bit output, low half first). HF datasets'
//                      train_test_split permutes rows this way.
// tests/parity/data/numpy_random_parity.py checks both against numpy.
//
// Ownership: plain values. Thread-safety: none (one stream per user, as numpy's).
//
// Example:
//   NumpyLegacyRandom legacy(42);
//   std::vector<int64_t> perm = legacy.Permutation(10);   // == np.random.seed(42); np.random.permutation(10)
//   NumpyGenerator rng(42);
//   std::vector<int64_t> src = rng.Choice(3, 1000, {0.5, 0.3, 0.2});  // == default_rng(42).choice(3, 1000, p=...)
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace anneal::data {

class NumpyLegacyRandom {
 public:
  explicit NumpyLegacyRandom(uint32_t seed) : mt_(seed) {}
  // np.random.permutation(n): arange(n) shuffled (Fisher-Yates from the end, random_interval).
  std::vector<int64_t> Permutation(int64_t n);
  // np.random.choice(n, size): uniform in [0, n) with replacement (randint's masked rejection). n >= 1.
  std::vector<int64_t> Choice(int64_t n, int64_t size);
  // np.random.randint(0, high, dtype=np.uint32) for 1 <= high <= 2^32 (datasketch's MinHash permutations).
  uint32_t RandintUint32(uint64_t high);

 private:
  uint64_t Interval(uint64_t max);  // uniform in [0, max], masked rejection
  std::mt19937 mt_;
};

class NumpyGenerator {
 public:
  // default_rng(seed) for a non-negative integer seed (SeedSequence of its 32-bit words).
  explicit NumpyGenerator(uint64_t seed);
  uint64_t NextUint64();
  double Random();  // Generator.random()
  // Generator.choice(n, size, p=probs): probs.size() == n, non-negative; callers check they sum to 1.
  std::vector<int64_t> Choice(int64_t n, int64_t size, const std::vector<double>& probs);
  // Generator.permutation(n), n >= 0.
  std::vector<int64_t> Permutation(int64_t n);

 private:
  uint32_t NextUint32();            // numpy's pcg64_next32: buffered halves of NextUint64
  uint64_t Interval(uint64_t max);  // numpy's random_interval: uniform in [0, max], masked rejection
  unsigned __int128 state_ = 0, inc_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

}  // namespace anneal::data
