#include "trainer/data/row_reader.h"

#include <fmt/format.h>

#include <deque>
#include <filesystem>
#include <fstream>

#include "trainer/data/columnar.h"

namespace anneal::data::internal {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr size_t kBlockBytes = size_t{1} << 20;

// Reads the file in blocks and cuts it into rows with a small state machine per file type (jsonl, json, txt).
class TextRowReader : public RowReader {
 public:
  enum class Kind { kJsonLines, kJsonArray, kText };
  TextRowReader(std::string path, Kind kind) : path_(std::move(path)), kind_(kind), block_(kBlockBytes) {}
  Status Open() {
    in_.open(path_, std::ios::binary);
    if (!in_) return NotFoundError("cannot open dataset file " + path_);
    return Status::Ok();
  }

  StatusOr<bool> Next(size_t max_rows, std::vector<RawRow>* out) override {
    while (ready_.size() < max_rows && !eof_) {
      in_.read(block_.data(), static_cast<std::streamsize>(block_.size()));
      const size_t n = static_cast<size_t>(in_.gcount());
      if (n == 0) {
        eof_ = true;
        RETURN_IF_ERROR(Finish());
        break;
      }
      RETURN_IF_ERROR(Scan(std::string_view(block_.data(), n)));
    }
    while (max_rows-- > 0 && !ready_.empty()) {
      out->push_back(std::move(ready_.front()));
      ready_.pop_front();
    }
    return !(eof_ && ready_.empty());
  }

 private:
  void Emit(std::string text, int64_t line, bool parse) {
    RawRow r;
    r.origin = fmt::format("{}:{}", path_, line);
    if (parse) {
      r.value = json::parse(text, nullptr, false);
      if (r.value.is_discarded()) r.parse_error = "not valid JSON";
    } else {
      r.value = json{{"text", std::move(text)}};
    }
    ready_.push_back(std::move(r));
  }

  Status Scan(std::string_view b) {
    if (kind_ == Kind::kJsonArray) return ScanArray(b);
    for (char c : b) {
      if (kind_ == Kind::kText) {
        // Universal newlines: \r\n, \r and \n each end a line.
        if (pending_cr_ && c == '\n') {
          pending_cr_ = false;
          continue;
        }
        pending_cr_ = false;
        if (c == '\n' || c == '\r') {
          Emit(std::move(line_text_), line_++, false);
          line_text_.clear();
          pending_cr_ = c == '\r';
          continue;
        }
        line_text_ += c;
      } else if (c == '\n') {
        EmitJsonLine();
      } else {
        line_text_ += c;
      }
    }
    return Status::Ok();
  }

  void EmitJsonLine() {
    if (line_text_.find_first_not_of(" \t\r") != std::string::npos) Emit(line_text_, line_, true);
    line_text_.clear();
    ++line_;
  }

  // Top-level elements of one JSON array: depth and string state carry across blocks; an element's text is
  // gathered from where it starts to the comma or bracket that ends it.
  Status ScanArray(std::string_view b) {
    size_t seg = 0;  // where the current element's text starts in this block
    for (size_t i = 0; i < b.size(); ++i) {
      const char c = b[i];
      if (done_) return Status::Ok();
      if (!in_array_) {
        if (c == '\n') ++line_;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\xEF' || c == '\xBB' || c == '\xBF') continue;
        if (c != '[') return InvalidArgumentError(path_ + ":1: a .json dataset must be an array of rows");
        in_array_ = true;
        continue;
      }
      if (c == '\n') ++line_;
      if (in_string_) {
        if (escape_)
          escape_ = false;
        else if (c == '\\')
          escape_ = true;
        else if (c == '"')
          in_string_ = false;
        continue;
      }
      if (!started_ && c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != ',' && c != ']') {
        started_ = true;
        start_line_ = line_;
        seg = i;
      }
      if (c == '"') {
        in_string_ = true;
      } else if (c == '{' || c == '[') {
        ++depth_;
      } else if ((c == '}' || c == ']') && depth_ > 0) {
        --depth_;
      } else if ((c == ',' || c == ']') && depth_ == 0) {
        if (started_) {
          element_.append(b.substr(seg, i - seg));
          Emit(std::move(element_), start_line_, true);
          element_.clear();
          started_ = false;
        }
        if (c == ']') done_ = true;
      }
    }
    if (started_) element_.append(b.substr(seg));
    return Status::Ok();
  }

  Status Finish() {
    if (kind_ == Kind::kJsonArray) {
      if (!in_array_) return InvalidArgumentError(path_ + ":1: a .json dataset must be an array of rows");
      if (!done_) return InvalidArgumentError(fmt::format("{}:{}: unterminated JSON array", path_, line_));
      return Status::Ok();
    }
    if (kind_ == Kind::kText) {
      if (!line_text_.empty()) Emit(std::move(line_text_), line_++, false);
      line_text_.clear();
      return Status::Ok();
    }
    if (!line_text_.empty()) EmitJsonLine();  // a last line without a newline
    return Status::Ok();
  }

  std::string path_;
  Kind kind_;
  std::ifstream in_;
  std::vector<char> block_;
  std::deque<RawRow> ready_;
  bool eof_ = false;
  int64_t line_ = 1;
  std::string line_text_;  // jsonl / txt: the unfinished line
  bool pending_cr_ = false;
  // json array state
  bool in_array_ = false, done_ = false, in_string_ = false, escape_ = false, started_ = false;
  int depth_ = 0;
  int64_t start_line_ = 1;
  std::string element_;
};

// Columnar files: one Arrow batch converted at a time, handed out up to max_rows per call.
class ColumnarRowReader : public RowReader {
 public:
  ColumnarRowReader(std::string path, std::unique_ptr<ColumnarBatchReader> batches)
      : path_(std::move(path)), batches_(std::move(batches)) {}
  StatusOr<bool> Next(size_t max_rows, std::vector<RawRow>* out) override {
    while (max_rows > 0) {
      if (next_ == batch_.size()) {
        if (done_) return false;
        batch_.clear();
        next_ = 0;
        ASSIGN_OR_RETURN(bool more, batches_->Next(&batch_));
        done_ = !more;
        continue;
      }
      out->push_back({std::move(batch_[next_++]), fmt::format("{}:row {}", path_, row_++), ""});
      --max_rows;
    }
    return !(done_ && next_ == batch_.size());
  }

 private:
  std::string path_;
  std::unique_ptr<ColumnarBatchReader> batches_;
  std::vector<json> batch_;
  size_t next_ = 0;
  int64_t row_ = 0;
  bool done_ = false;
};

}  // namespace

StatusOr<std::unique_ptr<RowReader>> OpenRowReader(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (IsColumnarExtension(ext)) {
    ASSIGN_OR_RETURN(std::unique_ptr<ColumnarBatchReader> batches, OpenColumnarBatches(path));
    return std::unique_ptr<RowReader>(new ColumnarRowReader(path, std::move(batches)));
  }
  TextRowReader::Kind kind;
  if (ext == ".jsonl")
    kind = TextRowReader::Kind::kJsonLines;
  else if (ext == ".json")
    kind = TextRowReader::Kind::kJsonArray;
  else if (ext == ".txt")
    kind = TextRowReader::Kind::kText;
  else
    return InvalidArgumentError(path + ": unsupported dataset file type (json, jsonl, csv, parquet, arrow, txt)");
  auto reader = std::make_unique<TextRowReader>(path, kind);
  RETURN_IF_ERROR(reader->Open());
  return std::unique_ptr<RowReader>(std::move(reader));
}

StatusOr<std::vector<RawRow>> ReadAllRows(const std::string& path) {
  std::vector<RawRow> rows;
  const std::string ext = fs::path(path).extension().string();
  if (IsColumnarExtension(ext)) {
    // Whole file: csv column types inferred over every row (Arrow's table reader), as before streaming.
    ASSIGN_OR_RETURN(std::vector<json> values, ReadColumnarFile(path));
    rows.reserve(values.size());
    for (size_t r = 0; r < values.size(); ++r)
      rows.push_back({std::move(values[r]), fmt::format("{}:row {}", path, r), ""});
    return rows;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<RowReader> reader, OpenRowReader(path));
  for (;;) {
    ASSIGN_OR_RETURN(bool more, reader->Next(size_t{1} << 16, &rows));
    if (!more) return rows;
  }
}

}  // namespace anneal::data::internal
