// Rows of one dataset file, read a batch at a time so memory stays bounded by the batch, not the file
// (internal to trainer/data: dataset.cc reads whole files through it, stream.cc reads batches).
//
// File types, by extension (dataset.h has what each row means):
//   .jsonl    one JSON value per line (blank lines skipped); origin "file:line"
//   .json     one JSON array; a small scanner finds where each top-level element starts and parses each on its
//             own (nlohmann reports no positions); origin "file:line" of the element's first character
//   .txt      HF datasets' "text" builder: universal newlines (\r\n and \r end a line too), one {"text": line}
//             per line, no row after a final newline; origin "file:line"
//   .csv .parquet .arrow   columnar.h's ColumnarBatchReader (csv: Arrow's streaming reader, types inferred
//             from the first block; parquet: row group by row group; arrow: record batch by record batch);
//             origin "file:row N" (0-based)
// Text files are read in 1 MiB blocks: memory holds one block, the rows of the batch and at most one
// unfinished element. A row that is not valid JSON comes back with parse_error set (the caller decides: an
// error naming the origin, or skipped with skip_bad_rows); a .json file that is not an array, or an array that
// never ends, is an INVALID_ARGUMENT naming the file and line.
//
// Thread-safety: a reader is used from one thread. Example:
//   ASSIGN_OR_RETURN(auto reader, OpenRowReader("data/train.jsonl"));
//   std::vector<RawRow> rows;
//   for (;;) { ASSIGN_OR_RETURN(bool more, reader->Next(1024, &rows)); ...; rows.clear(); if (!more) break; }
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::data::internal {

// A row of a file with where it comes from ("file:line" for JSON, "file:row N" for columnar files).
struct RawRow {
  nlohmann::json value;
  std::string origin;
  std::string parse_error;  // non-empty: the row is not valid JSON
};

class RowReader {
 public:
  virtual ~RowReader() = default;
  // Appends up to max_rows rows (at least one unless the file is done) to *out. Returns false once the file
  // has no more rows (rows may still have been appended by that call).
  virtual StatusOr<bool> Next(size_t max_rows, std::vector<RawRow>* out) = 0;
};

// Errors: NOT_FOUND (cannot open), INVALID_ARGUMENT (an unsupported extension; columnar: a bad file or column
// type, raised here before any row is read).
StatusOr<std::unique_ptr<RowReader>> OpenRowReader(const std::string& path);

// Every row of the file (OpenRowReader drained).
StatusOr<std::vector<RawRow>> ReadAllRows(const std::string& path);

}  // namespace anneal::data::internal
