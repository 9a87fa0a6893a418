// Helpers shared by dataset.cc and dataset_info.cc (not a public interface).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "common/status.h"

namespace anneal::data::internal {

StatusOr<std::string> ReadText(const std::string& path);

// HF datasets' split syntax for the one split a local file has: "train", "train[a:b]" (ints, negative from the
// end) or "train[a%:b%]" (rounded to the closest row, Python's round). Returns [from, to) over n rows;
// with n < 0 only the syntax is checked.
StatusOr<std::pair<int64_t, int64_t>> SplitRange(const std::string& split, int64_t n);

}  // namespace anneal::data::internal
