// `data split`: a deterministic train / validation / test split of a dataset's rows, row for row as HF datasets
// splits them, so a split made here equals the one a Python pipeline makes with the same seed.
//
// Ratios "8:1:1" (any non-negative numbers, train > 0, at least one of val and test > 0) become at most two
// Dataset.train_test_split(test_size=..., seed=seed) calls:
//   held  = rows.train_test_split(test_size=(val + test) / total, seed)   -> train = held["train"]
//   parts = held["test"].train_test_split(test_size=test / (val + test), seed)
//                                                                        -> val = parts["train"], test = parts["test"]
// (one call when val or test is 0). Each call: n_test = ceil(test_size * n), n_train = n - n_test,
// permutation = np.random.default_rng(seed).permutation(n) (numpy_random.h), test = permutation[:n_test],
// train = permutation[n_test:]. Indices are positions in the input, in the order the split lists them.
//
// Errors (INVALID_ARGUMENT, naming the ratios and the row counts): malformed ratios; a part that would be empty
// (HF datasets refuses an empty train split; here an empty validation or test split is refused too, since
// asking for one means wanting rows in it).
//
// Thread-safety: pure functions.
//
// Example:
//   ASSIGN_OR_RETURN(SplitRatios r, ParseSplitRatios("8:1:1"));
//   ASSIGN_OR_RETURN(SplitIndices s, SplitRows(rows.size(), r, /*seed=*/42));
//   // s.train.size() == 800, s.val.size() == 100, s.test.size() == 100 for 1000 rows
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::data {

struct SplitRatios {
  double train = 8, val = 1, test = 1;
};

struct SplitIndices {
  std::vector<int64_t> train, val, test;
};

// "8:1:1", "0.9:0.1:0" or "9:1" (no test part).
StatusOr<SplitRatios> ParseSplitRatios(std::string_view text);

StatusOr<SplitIndices> SplitRows(int64_t rows, const SplitRatios& ratios, uint64_t seed);

}  // namespace anneal::data
