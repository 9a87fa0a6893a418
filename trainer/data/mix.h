// Mixing several datasets as LLaMA-Factory's merge_dataset does it, with HF datasets' interleave_datasets
// semantics (datasets/arrow_dataset.py _interleave_map_style_datasets), index for index.
//
// The result is a list of indices into the concatenation of the datasets (dataset d's row r is
// offsets[d] + r, offsets being the running sum of the lengths):
//   concat            every row in order (no probabilities allowed, as LLaMA-Factory refuses them).
//   interleave_under  HF "first_exhausted": stop as soon as one source is exhausted.
//   interleave_over   HF "all_exhausted": stop once every source was exhausted; exhausted sources restart
//                     from their first row (oversampling).
//   interleave_once   HF "all_exhausted_without_replacement": every row exactly once; exhausted sources skipped.
// Without probabilities the sources are visited round-robin: under gives min(len) rows of each, over max(len)
// of each (cycling), once every row (skipping finished sources). With probabilities a source is drawn per row
// from np.random.default_rng(seed).choice(n, size=1000, p=probs) blocks (numpy_random.h), and the stop test
// runs before each append, as HF's loop: under ends right after the first source's last row, over after the
// last source's. A single dataset is returned as is (LLaMA-Factory returns it unmixed).
//
// Errors (INVALID_ARGUMENT, naming the key): an unknown strategy; probabilities with concat; a probability
// count that is not the dataset count, a negative probability, a sum off 1 by more than sqrt(double eps)
// (numpy's check); a source with probability > 0 that is empty; interleave_over or interleave_once with a
// probability of 0 (HF would loop forever: that source can never be exhausted).
//
// Thread-safety: pure function. Example:
//   ASSIGN_OR_RETURN(auto idx, MixIndices({3, 5}, "interleave_under", {0.5, 0.5}, 42));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::data {

StatusOr<std::vector<int64_t>> MixIndices(const std::vector<int64_t>& lengths, const std::string& strategy,
                                          const std::vector<double>& probabilities, uint64_t seed);

}  // namespace anneal::data
