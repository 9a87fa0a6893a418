#include "trainer/data/columnar.h"

#include <arrow/api.h>
#include <arrow/csv/api.h>
#include <arrow/io/api.h>
#include <arrow/ipc/api.h>
#include <fmt/format.h>
#include <parquet/arrow/reader.h>

#include <filesystem>

namespace anneal::data {
namespace {

using nlohmann::json;

Status FromArrow(const arrow::Status& s, const std::string& path) {
  if (s.ok()) return Status::Ok();
  if (s.IsIOError()) return NotFoundError(fmt::format("{}: {}", path, s.message()));
  return InvalidArgumentError(fmt::format("{}: {}", path, s.message()));
}

// Types we convert; checked once per column so a bad column fails before any row is read.
Status CheckType(const arrow::DataType& t, const std::string& where) {
  switch (t.id()) {
    case arrow::Type::NA:
    case arrow::Type::BOOL:
    case arrow::Type::INT8:
    case arrow::Type::INT16:
    case arrow::Type::INT32:
    case arrow::Type::INT64:
    case arrow::Type::UINT8:
    case arrow::Type::UINT16:
    case arrow::Type::UINT32:
    case arrow::Type::UINT64:
    case arrow::Type::FLOAT:
    case arrow::Type::DOUBLE:
    case arrow::Type::STRING:
    case arrow::Type::LARGE_STRING:
    case arrow::Type::STRING_VIEW:
      return Status::Ok();
    case arrow::Type::LIST:
    case arrow::Type::LARGE_LIST:
    case arrow::Type::FIXED_SIZE_LIST:
      return CheckType(*t.field(0)->type(), where + "[]");
    case arrow::Type::STRUCT:
      for (const auto& f : t.fields()) RETURN_IF_ERROR(CheckType(*f->type(), where + "." + f->name()));
      return Status::Ok();
    case arrow::Type::DICTIONARY:
      return CheckType(*static_cast<const arrow::DictionaryType&>(t).value_type(), where);
    default:
      return InvalidArgumentError(
          fmt::format("{}: type {} is not supported (strings, numbers, booleans, lists "
                      "and structs are)",
                      where, t.ToString()));
  }
}

template <typename ListArray>
json ListToJson(const ListArray& a, int64_t i);

json ToJson(const arrow::Array& a, int64_t i) {
  if (a.IsNull(i)) return nullptr;
  switch (a.type_id()) {
    case arrow::Type::BOOL:
      return static_cast<const arrow::BooleanArray&>(a).Value(i);
    case arrow::Type::INT8:
      return static_cast<const arrow::Int8Array&>(a).Value(i);
    case arrow::Type::INT16:
      return static_cast<const arrow::Int16Array&>(a).Value(i);
    case arrow::Type::INT32:
      return static_cast<const arrow::Int32Array&>(a).Value(i);
    case arrow::Type::INT64:
      return static_cast<const arrow::Int64Array&>(a).Value(i);
    case arrow::Type::UINT8:
      return static_cast<const arrow::UInt8Array&>(a).Value(i);
    case arrow::Type::UINT16:
      return static_cast<const arrow::UInt16Array&>(a).Value(i);
    case arrow::Type::UINT32:
      return static_cast<const arrow::UInt32Array&>(a).Value(i);
    case arrow::Type::UINT64:
      return static_cast<const arrow::UInt64Array&>(a).Value(i);
    case arrow::Type::FLOAT:
      return static_cast<const arrow::FloatArray&>(a).Value(i);
    case arrow::Type::DOUBLE:
      return static_cast<const arrow::DoubleArray&>(a).Value(i);
    case arrow::Type::STRING:
      return std::string(static_cast<const arrow::StringArray&>(a).GetView(i));
    case arrow::Type::LARGE_STRING:
      return std::string(static_cast<const arrow::LargeStringArray&>(a).GetView(i));
    case arrow::Type::STRING_VIEW:
      return std::string(static_cast<const arrow::StringViewArray&>(a).GetView(i));
    case arrow::Type::LIST:
      return ListToJson(static_cast<const arrow::ListArray&>(a), i);
    case arrow::Type::LARGE_LIST:
      return ListToJson(static_cast<const arrow::LargeListArray&>(a), i);
    case arrow::Type::FIXED_SIZE_LIST:
      return ListToJson(static_cast<const arrow::FixedSizeListArray&>(a), i);
    case arrow::Type::STRUCT: {
      const auto& s = static_cast<const arrow::StructArray&>(a);
      json o = json::object();
      for (int f = 0; f < s.num_fields(); ++f) o[s.struct_type()->field(f)->name()] = ToJson(*s.field(f), i);
      return o;
    }
    case arrow::Type::DICTIONARY: {
      const auto& d = static_cast<const arrow::DictionaryArray&>(a);
      return ToJson(*d.dictionary(), d.GetValueIndex(i));
    }
    default:
      return nullptr;  // NA; other types were refused by CheckType
  }
}

template <typename ListArray>
json ListToJson(const ListArray& a, int64_t i) {
  json out = json::array();
  auto start = a.value_offset(i), end = start + a.value_length(i);
  for (auto k = start; k < end; ++k) out.push_back(ToJson(*a.values(), k));
  return out;
}

arrow::Result<std::shared_ptr<arrow::Table>> ReadCsv(const std::string& path) {
  ARROW_ASSIGN_OR_RAISE(auto input, arrow::io::ReadableFile::Open(path));
  auto read = arrow::csv::ReadOptions::Defaults();
  auto parse = arrow::csv::ParseOptions::Defaults();
  parse.newlines_in_values = true;  // pandas reads quoted multi-line cells
  auto convert = arrow::csv::ConvertOptions::Defaults();
  convert.strings_can_be_null = true;     // pandas: an empty cell is NaN, None in HF datasets
  convert.null_values.push_back("None");  // Arrow's defaults are pandas' na_values but these two
  convert.null_values.push_back("<NA>");
  ARROW_ASSIGN_OR_RAISE(auto reader,
                        arrow::csv::TableReader::Make(arrow::io::default_io_context(), input, read, parse, convert));
  return reader->Read();
}

arrow::Result<std::shared_ptr<arrow::Table>> ReadParquet(const std::string& path) {
  ARROW_ASSIGN_OR_RAISE(auto input, arrow::io::ReadableFile::Open(path));
  ARROW_ASSIGN_OR_RAISE(auto reader, parquet::arrow::OpenFile(input, arrow::default_memory_pool()));
  return reader->ReadTable();
}

// HF datasets writes the IPC stream format; Feather v2 / pyarrow.ipc.new_file write the file format.
arrow::Result<std::shared_ptr<arrow::Table>> ReadArrowIpc(const std::string& path) {
  ARROW_ASSIGN_OR_RAISE(auto input, arrow::io::ReadableFile::Open(path));
  auto file_reader = arrow::ipc::RecordBatchFileReader::Open(input);
  if (file_reader.ok()) {
    std::vector<std::shared_ptr<arrow::RecordBatch>> batches;
    for (int b = 0; b < (*file_reader)->num_record_batches(); ++b) {
      ARROW_ASSIGN_OR_RAISE(auto batch, (*file_reader)->ReadRecordBatch(b));
      batches.push_back(std::move(batch));
    }
    return arrow::Table::FromRecordBatches((*file_reader)->schema(), batches);
  }
  ARROW_RETURN_NOT_OK(input->Seek(0));
  ARROW_ASSIGN_OR_RAISE(auto stream_reader, arrow::ipc::RecordBatchStreamReader::Open(input));
  return stream_reader->ToTable();
}

Status CheckSchema(const arrow::Schema& schema, const std::string& path) {
  for (const auto& f : schema.fields())
    RETURN_IF_ERROR(CheckType(*f->type(), fmt::format("{}: column '{}'", path, f->name())));
  return Status::Ok();
}

void AppendRows(const arrow::Schema& schema, const std::vector<std::shared_ptr<arrow::Array>>& columns,
                int64_t num_rows, std::vector<json>* rows) {
  const size_t first = rows->size();
  rows->resize(first + static_cast<size_t>(num_rows), json::object());
  for (size_t c = 0; c < columns.size(); ++c) {
    const std::string& name = schema.field(static_cast<int>(c))->name();
    for (int64_t r = 0; r < num_rows; ++r) (*rows)[first + static_cast<size_t>(r)][name] = ToJson(*columns[c], r);
  }
}

// Any Arrow RecordBatchReader (csv streaming, parquet row groups, IPC stream), one batch per Next.
class BatchReader : public ColumnarBatchReader {
 public:
  BatchReader(std::string path, std::shared_ptr<arrow::RecordBatchReader> reader, bool csv)
      : path_(std::move(path)), reader_(std::move(reader)), csv_(csv) {}
  StatusOr<bool> Next(std::vector<json>* rows) override {
    std::shared_ptr<arrow::RecordBatch> batch;
    arrow::Status s = reader_->ReadNext(&batch);
    if (!s.ok() && csv_ && s.IsInvalid()) {
      return InvalidArgumentError(fmt::format(
          "{}: {} (streaming reads a csv in 16 MiB blocks and infers column types from the first one: quote that "
          "column's values or convert the file to jsonl or parquet)",
          path_, s.message()));
    }
    RETURN_IF_ERROR(FromArrow(s, path_));
    if (batch == nullptr) return false;
    AppendRows(*batch->schema(), batch->columns(), batch->num_rows(), rows);
    return true;
  }

 private:
  std::string path_;
  std::shared_ptr<arrow::RecordBatchReader> reader_;
  bool csv_;
};

// The IPC file format (Feather v2): batches by index.
class IpcFileBatches : public ColumnarBatchReader {
 public:
  IpcFileBatches(std::string path, std::shared_ptr<arrow::ipc::RecordBatchFileReader> reader)
      : path_(std::move(path)), reader_(std::move(reader)) {}
  StatusOr<bool> Next(std::vector<json>* rows) override {
    if (next_ >= reader_->num_record_batches()) return false;
    auto batch = reader_->ReadRecordBatch(next_++);
    RETURN_IF_ERROR(FromArrow(batch.status(), path_));
    AppendRows(*(*batch)->schema(), (*batch)->columns(), (*batch)->num_rows(), rows);
    return true;
  }

 private:
  std::string path_;
  std::shared_ptr<arrow::ipc::RecordBatchFileReader> reader_;
  int next_ = 0;
};

arrow::Result<std::shared_ptr<arrow::RecordBatchReader>> CsvBatches(const std::string& path) {
  ARROW_ASSIGN_OR_RAISE(auto input, arrow::io::ReadableFile::Open(path));
  auto read = arrow::csv::ReadOptions::Defaults();
  read.block_size = 16 << 20;
  read.use_threads = false;
  auto parse = arrow::csv::ParseOptions::Defaults();
  parse.newlines_in_values = true;
  auto convert = arrow::csv::ConvertOptions::Defaults();
  convert.strings_can_be_null = true;
  convert.null_values.push_back("None");
  convert.null_values.push_back("<NA>");
  ARROW_ASSIGN_OR_RAISE(
      auto reader, arrow::csv::StreamingReader::Make(arrow::io::default_io_context(), input, read, parse, convert));
  return std::static_pointer_cast<arrow::RecordBatchReader>(reader);
}

// Parquet: one row group at a time, read whole (no read-ahead or pre-buffering of later row groups).
class ParquetRowGroups : public ColumnarBatchReader {
 public:
  ParquetRowGroups(std::string path, std::unique_ptr<parquet::arrow::FileReader> reader)
      : path_(std::move(path)), reader_(std::move(reader)) {}
  StatusOr<bool> Next(std::vector<json>* rows) override {
    if (next_ >= reader_->num_row_groups()) return false;
    auto table = reader_->ReadRowGroup(next_++);
    RETURN_IF_ERROR(FromArrow(table.status(), path_));
    auto combined = (*table)->CombineChunks();
    RETURN_IF_ERROR(FromArrow(combined.status(), path_));
    std::vector<std::shared_ptr<arrow::Array>> columns;
    for (const auto& column : (*combined)->columns()) {
      if (column->chunks().empty()) return true;  // an empty row group
      columns.push_back(column->chunk(0));
    }
    AppendRows(*(*combined)->schema(), columns, (*combined)->num_rows(), rows);
    return true;
  }
  const arrow::Schema* schema() {
    if (!schema_) (void)reader_->GetSchema(&schema_);
    return schema_.get();
  }

 private:
  std::string path_;
  std::unique_ptr<parquet::arrow::FileReader> reader_;
  std::shared_ptr<arrow::Schema> schema_;
  int next_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<ColumnarBatchReader>> OpenColumnarBatches(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return NotFoundError("cannot open dataset file " + path);
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".arrow") {
    auto input = arrow::io::ReadableFile::Open(path);
    RETURN_IF_ERROR(FromArrow(input.status(), path));
    auto file_reader = arrow::ipc::RecordBatchFileReader::Open(*input);
    if (file_reader.ok()) {
      RETURN_IF_ERROR(CheckSchema(*(*file_reader)->schema(), path));
      return std::unique_ptr<ColumnarBatchReader>(new IpcFileBatches(path, *file_reader));
    }
    RETURN_IF_ERROR(FromArrow((*input)->Seek(0), path));
    auto stream = arrow::ipc::RecordBatchStreamReader::Open(*input);
    RETURN_IF_ERROR(FromArrow(stream.status(), path));
    RETURN_IF_ERROR(CheckSchema(*(*stream)->schema(), path));
    return std::unique_ptr<ColumnarBatchReader>(new BatchReader(path, *stream, false));
  }
  if (ext == ".parquet") {
    auto input = arrow::io::ReadableFile::Open(path);
    RETURN_IF_ERROR(FromArrow(input.status(), path));
    auto file = parquet::arrow::OpenFile(*input, arrow::default_memory_pool());
    RETURN_IF_ERROR(FromArrow(file.status(), path));
    auto groups = std::make_unique<ParquetRowGroups>(path, std::move(*file));
    if (groups->schema() == nullptr) return InvalidArgumentError(path + ": cannot read the parquet schema");
    RETURN_IF_ERROR(CheckSchema(*groups->schema(), path));
    return std::unique_ptr<ColumnarBatchReader>(std::move(groups));
  }
  if (ext != ".csv") return InvalidArgumentError(path + ": not a csv, parquet or arrow file");
  arrow::Result<std::shared_ptr<arrow::RecordBatchReader>> reader = CsvBatches(path);
  RETURN_IF_ERROR(FromArrow(reader.status(), path));
  RETURN_IF_ERROR(CheckSchema(*(*reader)->schema(), path));
  return std::unique_ptr<ColumnarBatchReader>(new BatchReader(path, *reader, ext == ".csv"));
}

bool IsColumnarExtension(const std::string& e) {
  return e == ".csv" || e == ".parquet" || e == ".arrow";
}

StatusOr<std::vector<json>> ReadColumnarFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return NotFoundError("cannot open dataset file " + path);
  std::string ext = std::filesystem::path(path).extension().string();
  arrow::Result<std::shared_ptr<arrow::Table>> table;
  if (ext == ".csv")
    table = ReadCsv(path);
  else if (ext == ".parquet")
    table = ReadParquet(path);
  else if (ext == ".arrow")
    table = ReadArrowIpc(path);
  else
    return InvalidArgumentError(path + ": not a csv, parquet or arrow file");
  RETURN_IF_ERROR(FromArrow(table.status(), path));
  auto combined = (*table)->CombineChunks();
  RETURN_IF_ERROR(FromArrow(combined.status(), path));
  const arrow::Table& t = **combined;
  RETURN_IF_ERROR(CheckSchema(*t.schema(), path));
  std::vector<json> rows;
  std::vector<std::shared_ptr<arrow::Array>> columns;
  for (int c = 0; c < t.num_columns(); ++c) {
    const auto& chunks = t.column(c)->chunks();
    if (chunks.empty()) return rows;  // zero rows
    columns.push_back(chunks[0]);
  }
  AppendRows(*t.schema(), columns, t.num_rows(), &rows);
  return rows;
}

}  // namespace anneal::data
