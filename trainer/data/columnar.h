// Columnar dataset files (csv, parquet, arrow) read with Apache Arrow C++ into JSON rows.
//
// Rows come back as JSON objects (column name -> value) so that alpaca / sharegpt / tokenized conversion is
// the same code for every file type (dataset.cc), and a dataset gives identical conversations whether it is
// stored as .json, .jsonl, .csv, .parquet or .arrow. Types, as HF datasets presents them to LLaMA-Factory:
//   string / large_string / string_view -> string     int*, uint* -> integer      float, double -> number
//   bool -> boolean    null (or a null cell) -> null   list / large_list / fixed_size_list -> array
//   struct -> object (e.g. sharegpt messages as list<struct<from, value>> or list<struct<role, content>>)
//   dictionary -> its decoded value
// Any other type (binary, timestamps, maps, ...) is an INVALID_ARGUMENT naming the file, the column and the
// type, raised when the file is read (before any row is converted).
//
// File types, by extension:
//   .csv      header row + rows (Arrow's CSV reader; types inferred as pandas would: ints, floats, strings;
//             an empty cell is null, as pandas' NaN becomes None in HF datasets)
//   .parquet  any Parquet file
//   .arrow    Arrow IPC: the *stream* format (what HF datasets' save_to_disk / cache files hold) or the file
//             format (Feather v2); the stream format is tried when the file's magic is absent.
//
// Batches (OpenColumnarBatches; what streaming preparation reads, so memory holds one batch, not the file):
//   .csv      Arrow's csv::StreamingReader, 16 MiB blocks; column types are inferred from the first block
//             (ReadColumnarFile infers them over the whole file). A later cell that does not fit the inferred
//             type is an INVALID_ARGUMENT naming the file and saying so (quote the column's values, or convert
//             the file to jsonl / parquet). Files under 16 MiB give the same types both ways.
//   .parquet  row group by row group (parquet::arrow::FileReader::GetRecordBatchReader)
//   .arrow    record batch by record batch (IPC file or stream format)
//
// Ownership: results are values; ReadColumnarFile closes the file when it returns, a batch reader when it is
// destroyed.
// Thread-safety: pure function over a file; Arrow's CPU pool may use its own threads while reading.
//
// Example:
//   ASSIGN_OR_RETURN(std::vector<nlohmann::json> rows, ReadColumnarFile("data/train.parquet"));
//   // rows[0]["instruction"].get<std::string>()
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::data {

// True for the extensions ReadColumnarFile reads: ".csv", ".parquet", ".arrow".
bool IsColumnarExtension(const std::string& extension);

// Every row of the file as a JSON object. Errors: NOT_FOUND (cannot open), INVALID_ARGUMENT (not a valid
// file of its type, or a column of an unsupported type: "<path>: column '<name>': type <t> is not supported").
StatusOr<std::vector<nlohmann::json>> ReadColumnarFile(const std::string& path);

class ColumnarBatchReader {
 public:
  virtual ~ColumnarBatchReader() = default;
  // Appends the next batch's rows to *rows (same JSON values as ReadColumnarFile); false once the file is done.
  virtual StatusOr<bool> Next(std::vector<nlohmann::json>* rows) = 0;
};

// Errors as ReadColumnarFile's, raised when opening (the schema's column types are checked before any row).
StatusOr<std::unique_ptr<ColumnarBatchReader>> OpenColumnarBatches(const std::string& path);

}  // namespace anneal::data
