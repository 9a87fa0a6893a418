// Deterministic, data-parallel-sharded, resumable sample order.
//
// The global order is an endless stream of positions p = 0, 1, 2, ...: epoch = p / n, and position p maps
// to perm_epoch[p % n], where perm_epoch is a Fisher-Yates shuffle of 0..n-1 driven by splitmix64 seeded
// from (seed, epoch) (our own generator, so the order never depends on the C++ standard library).
// Rank r of dp takes positions consumed + r, consumed + r + dp, ...: a global batch of G consecutive
// positions is the same set of samples whatever dp is (G divisible by dp), and resuming needs only the
// number of consumed samples (global), so every restart replays the identical order.
//
// Ownership: a Sampler is a self-contained value (n, seed, a cached permutation).
// Thread-safety: Sampler caches the current epoch's permutation under a mutex; all methods are safe to call
// concurrently.
//
// Example:
//   Sampler s(dataset_size, /*seed=*/42);
//   std::vector<int64_t> mine = s.RankBatch(consumed_samples, dp_rank, dp_size, micro_batch);
//   consumed_samples += micro_batch * dp_size;
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace anneal::data {

// splitmix64 (Steele, Lea, Flood 2014): a tiny, fixed, well-mixed 64-bit generator.
struct SplitMix64 {
  uint64_t state;
  explicit SplitMix64(uint64_t seed) : state(seed) {}
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) by rejection (no modulo bias), bound > 0.
  uint64_t Below(uint64_t bound) {
    uint64_t limit = ~0ull - (~0ull % bound);
    uint64_t x;
    do x = Next(); while (x >= limit);
    return x % bound;
  }
};

// A permutation of 0..n-1 for (seed, epoch); the identity order when shuffle is false.
std::vector<int64_t> ShuffledIndices(int64_t n, uint64_t seed, int64_t epoch, bool shuffle = true);

class Sampler {
 public:
  Sampler(int64_t num_samples, uint64_t seed, bool shuffle = true)
      : n_(num_samples), seed_(seed), shuffle_(shuffle) {}

  int64_t size() const { return n_; }
  // Sample index at a global position (epoch = position / size()).
  int64_t IndexAt(int64_t global_position) const;
  // `count` indices for one rank: positions consumed + rank + k * dp, k = 0..count-1.
  std::vector<int64_t> RankBatch(int64_t consumed_samples, int dp_rank, int dp_size, int count) const;

 private:
  int64_t n_;
  uint64_t seed_;
  bool shuffle_;
  mutable std::mutex mu_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> perm_;
};

}  // namespace anneal::data
