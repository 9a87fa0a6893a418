#include "trainer/data/sampler.h"

#include <numeric>
#include <utility>

#include "common/status.h"

namespace anneal::data {

std::vector<int64_t> ShuffledIndices(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> perm(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::iota(perm.begin(), perm.end(), 0);
  if (!shuffle || n < 2) return perm;
  // Mix seed and epoch through one splitmix step so nearby (seed, epoch) pairs give unrelated streams.
  SplitMix64 mix(seed ^ (static_cast<uint64_t>(epoch) * 0xd1342543de82ef95ull));
  SplitMix64 rng(mix.Next());
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng.Below(static_cast<uint64_t>(i + 1)));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

int64_t Sampler::IndexAt(int64_t p) const {
  ANNEAL_CHECK(n_ > 0 && p >= 0);
  int64_t epoch = p / n_;
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch != cached_epoch_) {
    perm_ = ShuffledIndices(n_, seed_, epoch, shuffle_);
    cached_epoch_ = epoch;
  }
  return perm_[p % n_];
}

std::vector<int64_t> Sampler::RankBatch(int64_t consumed, int dp_rank, int dp_size, int count) const {
  ANNEAL_CHECK(dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size);
  std::vector<int64_t> out;
  out.reserve(count);
  for (int k = 0; k < count; ++k) out.push_back(IndexAt(consumed + dp_rank + static_cast<int64_t>(k) * dp_size));
  return out;
}

}  // namespace anneal::data
