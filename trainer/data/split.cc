#include "trainer/data/split.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "trainer/data/numpy_random.h"

namespace anneal::data {
namespace {

struct TwoWay {
  std::vector<int64_t> train, test;  // positions in the split's input
};

// Dataset.train_test_split(test_size, seed) over `n` rows, shuffled (HF datasets' arrow_dataset.py).
TwoWay TrainTestSplit(int64_t n, double test_size, uint64_t seed) {
  const auto n_test = static_cast<int64_t>(std::ceil(test_size * static_cast<double>(n)));
  const std::vector<int64_t> permutation = NumpyGenerator(seed).Permutation(n);
  TwoWay out;
  out.test.assign(permutation.begin(), permutation.begin() + n_test);
  out.train.assign(permutation.begin() + n_test, permutation.end());
  return out;
}

std::vector<int64_t> Select(const std::vector<int64_t>& base, const std::vector<int64_t>& positions) {
  std::vector<int64_t> out;
  out.reserve(positions.size());
  for (int64_t p : positions) out.push_back(base[static_cast<size_t>(p)]);
  return out;
}

std::string Describe(const SplitRatios& r) {
  return fmt::format("{}:{}:{}", r.train, r.val, r.test);
}

}  // namespace

StatusOr<SplitRatios> ParseSplitRatios(std::string_view text) {
  std::vector<double> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t colon = std::min(text.find(':', start), text.size());
    const std::string piece(text.substr(start, colon - start));
    char* end = nullptr;
    const double v = std::strtod(piece.c_str(), &end);
    if (piece.empty() || end != piece.c_str() + piece.size() || !std::isfinite(v) || v < 0) {
      return InvalidArgumentError(fmt::format(
          "split ratios '{}': '{}' is not a non-negative number (write train:val:test, e.g. 8:1:1)", text, piece));
    }
    parts.push_back(v);
    start = colon + 1;
  }
  if (parts.size() != 2 && parts.size() != 3) {
    return InvalidArgumentError(
        fmt::format("split ratios '{}': {} part(s); write train:val:test (8:1:1) or "
                    "train:val (9:1)",
                    text, parts.size()));
  }
  SplitRatios r{.train = parts[0], .val = parts[1], .test = parts.size() == 3 ? parts[2] : 0};
  if (r.train <= 0) return InvalidArgumentError(fmt::format("split ratios '{}': the train part must be > 0", text));
  if (r.val + r.test <= 0) {
    return InvalidArgumentError(
        fmt::format("split ratios '{}': nothing is held out (validation and test are 0)", text));
  }
  return r;
}

StatusOr<SplitIndices> SplitRows(int64_t rows, const SplitRatios& ratios, uint64_t seed) {
  const double total = ratios.train + ratios.val + ratios.test;
  const double held_size = (ratios.val + ratios.test) / total;
  const TwoWay first = TrainTestSplit(rows, held_size, seed);
  SplitIndices out;
  out.train = first.train;
  if (ratios.val > 0 && ratios.test > 0) {
    const auto held = static_cast<int64_t>(first.test.size());
    const TwoWay second = TrainTestSplit(held, ratios.test / (ratios.val + ratios.test), seed);
    out.val = Select(first.test, second.train);
    out.test = Select(first.test, second.test);
  } else if (ratios.val > 0) {
    out.val = first.test;
  } else {
    out.test = first.test;
  }
  const auto empty = [&](const std::vector<int64_t>& part, double ratio) { return ratio > 0 && part.empty(); };
  if (empty(out.train, ratios.train) || empty(out.val, ratios.val) || empty(out.test, ratios.test)) {
    return InvalidArgumentError(fmt::format(
        "split {} of {} row(s) leaves a part empty (train {}, validation {}, test {}): too few rows for these ratios",
        Describe(ratios), rows, out.train.size(), out.val.size(), out.test.size()));
  }
  return out;
}

}  // namespace anneal::data
