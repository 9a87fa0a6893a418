// Helpers shared by dataset.cc, dataset_info.cc and stream.cc (not a public interface).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "common/status.h"
#include "trainer/data/dataset.h"
#include "trainer/data/row_reader.h"

namespace anneal::data::internal {

StatusOr<std::string> ReadText(const std::string& path);

// HF datasets' split syntax for the one split a local file has: "train", "train[a:b]" (ints, negative from the
// end) or "train[a%:b%]" (rounded to the closest row, Python's round). Returns [from, to) over n rows;
// with n < 0 only the syntax is checked.
StatusOr<std::pair<int64_t, int64_t>> SplitRange(const std::string& split, int64_t n);

// formatting "auto" (a file named directly): sets attr's format and columns from the first row's keys.
void DetectFormat(const nlohmann::json& first_row, DatasetAttr* attr);

// One row converted by attr's formatting (alpaca, sharegpt, tokenized). Errors are "field: problem" (the
// caller prefixes the row's origin); a row that is not valid JSON or not an object is an error too.
StatusOr<Conversation> ConvertRow(const DatasetAttr& attr, const RawRow& row, const LoadOptions& options);

}  // namespace anneal::data::internal
