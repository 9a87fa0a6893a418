#include "trainer/data/stream.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>

#include "trainer/data/dataset_internal.h"
#include "trainer/data/mix.h"
#include "trainer/data/row_reader.h"

namespace anneal::data {

using internal::RawRow;

bool CanStream(const std::vector<DatasetAttr>& attrs, std::string* why) {
  for (const DatasetAttr& a : attrs) {
    if (a.split != "train") {
      *why = fmt::format("dataset '{}' has split '{}' (a slice needs the row count first)", a.name, a.split);
      return false;
    }
    if (a.num_samples) {
      *why = fmt::format("dataset '{}' has num_samples (a permutation of every row)", a.name);
      return false;
    }
  }
  return true;
}

// One dataset's converted rows in file order: its files one after another, max_samples raw rows at most.
class ConversationStream::Cursor {
 public:
  Cursor(DatasetAttr attr, const LoadOptions& o, LoadReport* report)
      : attr_(std::move(attr)), options_(o), report_(report) {
    files_ = attr_.files.empty() ? std::vector<std::string>{attr_.file_path} : attr_.files;
    detect_ = attr_.formatting == "auto";
  }

  // From the first file again (interleave_over restarts an exhausted dataset); rows are not reported again.
  void Restart() {
    reader_.reset();
    file_ = 0;
    raw_rows_ = 0;
    ready_.clear();
    report_ = nullptr;
  }

  // The next converted row; false when the dataset is exhausted.
  StatusOr<bool> Pull(Conversation* out) {
    while (ready_.empty()) {
      ASSIGN_OR_RETURN(bool more, Fill());
      if (!more && ready_.empty()) return false;
    }
    *out = std::move(ready_.front());
    ready_.pop_front();
    return true;
  }

  // Converted rows left (reads the rest of the dataset, holding one batch at a time).
  StatusOr<int64_t> Count() {
    int64_t n = 0;
    Conversation c;
    for (;;) {
      ASSIGN_OR_RETURN(bool got, Pull(&c));
      if (!got) return n;
      ++n;
    }
  }

 private:
  // Reads and converts up to one batch of raw rows into ready_; false once the files are done.
  StatusOr<bool> Fill() {
    constexpr size_t kBatchRows = 512;
    const int64_t limit = options_.max_samples ? std::max<int64_t>(*options_.max_samples, 0) : -1;
    std::vector<RawRow> raw;
    while (raw.empty()) {
      if (limit >= 0 && raw_rows_ >= limit) return false;
      if (!reader_) {
        if (file_ == files_.size()) return false;
        ASSIGN_OR_RETURN(reader_, internal::OpenRowReader(files_[file_]));
      }
      size_t want = kBatchRows;
      if (limit >= 0) want = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(want), limit - raw_rows_));
      ASSIGN_OR_RETURN(bool more, reader_->Next(want, &raw));
      if (!more) {
        reader_.reset();
        ++file_;
      }
    }
    raw_rows_ += static_cast<int64_t>(raw.size());
    if (detect_) {
      attr_.formatting = "alpaca";
      internal::DetectFormat(raw[0].value, &attr_);
      detect_ = false;
    }
    for (const RawRow& row : raw) {
      StatusOr<Conversation> c = internal::ConvertRow(attr_, row, options_);
      if (report_) ++report_->rows;
      if (!c.ok()) {
        Status s = c.status().WithContext(row.origin);
        if (!options_.skip_bad_rows)
          return InvalidArgumentError(s.message() + " (set skip_bad_rows to skip such rows)");
        if (report_) {
          ++report_->skipped;
          if (report_->skipped_examples.size() < 5) report_->skipped_examples.push_back(s.message());
        }
        continue;
      }
      c->origin = row.origin;
      ready_.push_back(std::move(*c));
    }
    return true;
  }

  DatasetAttr attr_;
  LoadOptions options_;
  LoadReport* report_;
  std::vector<std::string> files_;
  bool detect_ = false;
  size_t file_ = 0;
  int64_t raw_rows_ = 0;
  std::unique_ptr<internal::RowReader> reader_;
  std::deque<Conversation> ready_;
};

ConversationStream::~ConversationStream() = default;

StatusOr<std::unique_ptr<ConversationStream>> ConversationStream::Open(const std::vector<DatasetAttr>& attrs,
                                                                       const LoadOptions& o, LoadReport* report) {
  std::string why;
  if (!CanStream(attrs, &why)) return FailedPreconditionError("cannot stream: " + why);
  const bool interleave = o.mix_strategy == "interleave_under" || o.mix_strategy == "interleave_over" ||
                          o.mix_strategy == "interleave_once";
  std::unique_ptr<ConversationStream> s(new ConversationStream());
  if (!interleave) {
    // concat (or an unknown strategy, or probabilities with concat: MixIndices names the mistake).
    RETURN_IF_ERROR(
        MixIndices(std::vector<int64_t>(attrs.size(), 0), o.mix_strategy, o.interleave_probs, o.seed).status());
    for (const DatasetAttr& a : attrs) s->cursors_.push_back(std::make_unique<Cursor>(a, o, report));
    return s;
  }
  // Interleave: count each dataset's converted rows (reporting them), then mix as LoadAndMixDatasets does.
  std::vector<int64_t> lengths;
  for (const DatasetAttr& a : attrs) {
    Cursor counter(a, o, report);
    ASSIGN_OR_RETURN(int64_t n, counter.Count());
    lengths.push_back(n);
    s->cursors_.push_back(std::make_unique<Cursor>(a, o, nullptr));
  }
  ASSIGN_OR_RETURN(s->order_, MixIndices(lengths, o.mix_strategy, o.interleave_probs, o.seed));
  s->concat_ = false;
  s->offsets_.assign(lengths.size(), 0);
  for (size_t d = 1; d < lengths.size(); ++d) s->offsets_[d] = s->offsets_[d - 1] + lengths[d - 1];
  s->positions_.assign(lengths.size(), 0);
  return s;
}

StatusOr<bool> ConversationStream::Next(size_t max_rows, std::vector<Conversation>* out) {
  Conversation c;
  if (concat_) {
    while (max_rows > 0 && concat_at_ < cursors_.size()) {
      ASSIGN_OR_RETURN(bool got, cursors_[concat_at_]->Pull(&c));
      if (!got) {
        ++concat_at_;
        continue;
      }
      out->push_back(std::move(c));
      --max_rows;
    }
    return concat_at_ < cursors_.size();
  }
  for (; max_rows > 0 && order_at_ < order_.size(); --max_rows) {
    const int64_t index = order_[order_at_++];
    const size_t d =
        static_cast<size_t>(std::upper_bound(offsets_.begin(), offsets_.end(), index) - offsets_.begin() - 1);
    // MixIndices takes each dataset's rows in order, restarting an exhausted one from its first row.
    const int64_t row = index - offsets_[d];
    if (row != positions_[d]) {
      if (row != 0) return InternalError(fmt::format("stream: mixed row {} of dataset {} out of order", row, d));
      cursors_[d]->Restart();
    }
    ASSIGN_OR_RETURN(bool got, cursors_[d]->Pull(&c));
    if (!got) return InternalError(fmt::format("stream: dataset {} ended before row {}", d, row));
    positions_[d] = row + 1;
    out->push_back(std::move(c));
  }
  return order_at_ < order_.size();
}

}  // namespace anneal::data
