#include "trainer/data/mix.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "trainer/data/numpy_random.h"

namespace anneal::data {
namespace {

Status CheckProbabilities(const std::vector<int64_t>& lengths, const std::string& strategy,
                          const std::vector<double>& p) {
  if (p.size() != lengths.size())
    return InvalidArgumentError(
        fmt::format("interleave_probs: {} probabilities for {} datasets", p.size(), lengths.size()));
  double sum = 0, c = 0;  // Kahan, as numpy's kahan_sum
  for (size_t i = 0; i < p.size(); ++i) {
    if (!(p[i] >= 0))
      return InvalidArgumentError(fmt::format("interleave_probs[{}] = {}: probabilities must be >= 0", i, p[i]));
    double y = p[i] - c, t = sum + y;
    c = (t - sum) - y;
    sum = t;
  }
  if (std::abs(sum - 1.0) > std::sqrt(std::numeric_limits<double>::epsilon()))
    return InvalidArgumentError(fmt::format("interleave_probs sum to {}, not 1", sum));
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] > 0 && lengths[i] == 0)
      return InvalidArgumentError(fmt::format("interleave_probs: dataset {} is empty but has probability {}", i, p[i]));
    if (p[i] == 0 && strategy != "interleave_under")
      return InvalidArgumentError(
          fmt::format("interleave_probs: dataset {} has probability 0, so {} could never exhaust it", i, strategy));
  }
  return Status::Ok();
}

std::vector<int64_t> RoundRobin(const std::vector<int64_t>& lengths, const std::vector<int64_t>& offsets,
                                const std::string& strategy) {
  std::vector<int64_t> out;
  int64_t lo = *std::min_element(lengths.begin(), lengths.end());
  int64_t hi = *std::max_element(lengths.begin(), lengths.end());
  int64_t rounds = strategy == "interleave_under" ? lo : hi;
  for (int64_t i = 0; i < rounds; ++i)
    for (size_t d = 0; d < lengths.size(); ++d) {
      if (strategy == "interleave_over")
        out.push_back(offsets[d] + i % lengths[d]);
      else if (i < lengths[d])  // under: always true; once: finished sources are skipped
        out.push_back(offsets[d] + i);
    }
  return out;
}

std::vector<int64_t> Sampled(const std::vector<int64_t>& lengths, const std::vector<int64_t>& offsets,
                             const std::string& strategy, const std::vector<double>& p, uint64_t seed) {
  const size_t n = lengths.size();
  NumpyGenerator rng(seed);
  std::vector<bool> exhausted(n, false);
  std::vector<int64_t> current(n, 0), out;
  auto stop = [&] {
    if (strategy == "interleave_under") {
      for (size_t d = 0; d < n; ++d)
        if (exhausted[d]) return true;
      return false;
    }
    return std::all_of(exhausted.begin(), exhausted.end(), [](bool e) { return e; });
  };
  for (;;) {
    for (int64_t s : rng.Choice(static_cast<int64_t>(n), 1000, p)) {
      if (stop()) return out;
      if (strategy == "interleave_once") {
        if (!exhausted[s]) out.push_back(current[s]++ + offsets[s]);
        if (current[s] >= lengths[s]) exhausted[s] = true;
        continue;
      }
      out.push_back(current[s]++ + offsets[s]);
      if (current[s] >= lengths[s]) {
        exhausted[s] = true;
        current[s] = 0;
      }
    }
  }
}

}  // namespace

StatusOr<std::vector<int64_t>> MixIndices(const std::vector<int64_t>& lengths, const std::string& strategy,
                                          const std::vector<double>& probabilities, uint64_t seed) {
  bool interleave = strategy == "interleave_under" || strategy == "interleave_over" || strategy == "interleave_once";
  if (strategy != "concat" && !interleave)
    return InvalidArgumentError(fmt::format(
        "mix_strategy '{}' is unknown (concat, interleave_under, interleave_over, interleave_once)", strategy));
  if (strategy == "concat" && !probabilities.empty())
    return InvalidArgumentError("interleave_probs is only valid with an interleave_* mix_strategy");
  std::vector<int64_t> offsets(lengths.size(), 0);
  for (size_t d = 1; d < lengths.size(); ++d) offsets[d] = offsets[d - 1] + lengths[d - 1];
  int64_t total = lengths.empty() ? 0 : offsets.back() + lengths.back();
  if (!probabilities.empty()) RETURN_IF_ERROR(CheckProbabilities(lengths, strategy, probabilities));
  if (strategy == "concat" || lengths.size() <= 1) {
    std::vector<int64_t> all(static_cast<size_t>(total));
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  if (probabilities.empty()) return RoundRobin(lengths, offsets, strategy);
  return Sampled(lengths, offsets, strategy, probabilities, seed);
}

}  // namespace anneal::data
