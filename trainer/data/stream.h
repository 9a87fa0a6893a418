// Bounded-memory loading: datasets read, converted and mixed a batch at a time, giving the same conversations
// in the same order as LoadAndMixDatasets (dataset.h) without ever holding a whole file.
//
// What streams: every file type (row_reader.h: json, jsonl and txt in 1 MiB blocks, csv in 16 MiB blocks,
// parquet row group by row group, arrow record batch by record batch), directories of files, max_samples
// (the first N rows of each dataset), skip_bad_rows, formatting "auto", and every mix_strategy with or without
// interleave_probs. Memory holds one batch per dataset; interleaving also holds the mixed order (MixIndices:
// 8 bytes per mixed row), found after a first counting pass that reads and converts every row (MixIndices
// needs each dataset's converted length), and interleave_over reopens a dataset it has exhausted, as HF
// datasets restarts it.
// What does not stream (CanStream says why): a split slice other than the whole "train" ("train[10%:]" needs
// the row count before the first row) and num_samples (a numpy permutation of all rows); the pipeline then
// loads the datasets whole.
//
// Errors are LoadAndMixDatasets': a malformed row names its origin (file:line or file:row N), or is skipped
// and counted in the LoadReport with skip_bad_rows; in an interleaved mix the counting pass fills the report.
//
// Thread-safety: a stream is used from one thread. Example:
//   ASSIGN_OR_RETURN(auto stream, ConversationStream::Open(attrs, options, &report));
//   std::vector<Conversation> batch;
//   for (bool more = true; more;) { batch.clear(); ASSIGN_OR_RETURN(more, stream->Next(4096, &batch)); ... }
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/data/dataset.h"

namespace anneal::data {

// True when the datasets can be streamed; otherwise false with *why naming the dataset and the key.
bool CanStream(const std::vector<DatasetAttr>& attrs, std::string* why);

class ConversationStream {
 public:
  // attrs must pass CanStream (FAILED_PRECONDITION otherwise). Opens the files; an interleaved mix runs its
  // counting pass here.
  static StatusOr<std::unique_ptr<ConversationStream>> Open(const std::vector<DatasetAttr>& attrs,
                                                            const LoadOptions& options, LoadReport* report);
  ~ConversationStream();
  ConversationStream(const ConversationStream&) = delete;
  ConversationStream& operator=(const ConversationStream&) = delete;

  // Appends up to max_rows conversations, in mixed order, to *out; false once there are no more.
  StatusOr<bool> Next(size_t max_rows, std::vector<Conversation>* out);

 private:
  class Cursor;
  ConversationStream() = default;
  std::vector<std::unique_ptr<Cursor>> cursors_;
  bool concat_ = true;
  size_t concat_at_ = 0;                              // concat: the dataset being read
  std::vector<int64_t> order_, offsets_, positions_;  // interleave: mixed indices, offsets, rows taken
  size_t order_at_ = 0;
};

}  // namespace anneal::data
