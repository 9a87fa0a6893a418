// TensorBoardWriter: scalar summaries in TensorBoard event files, the layout Hugging Face's TensorBoardCallback
// (and so LLaMA-Factory's `report_to: tensorboard`) produces:
//   <output_dir>/runs/<Mon DD_HH-MM-SS>_<hostname>/events.out.tfevents.<unix time>.<hostname>.<pid>.<n>
// Each file is TFRecord-framed (tfrecord.h) Event messages (tensorboard_event.proto): first file_version
// "brain.Event:2", then one Event per logged step whose summary holds every scalar of that step (tags such as
// train/loss, train/learning_rate, train/grad_norm, eval/loss). Every Add is flushed, so TensorBoard sees it live.
//
// Resume (one job = one TensorBoard run, however many attempts):
//   Open(out, 0)        a new run directory (as HF makes one per launch)
//   Open(out, S > 0)    the newest run directory under runs/ is reused; the records of earlier attempts at steps
//                       <= S are copied into this attempt's new file and the earlier files are removed, so a step
//                       past S that the earlier attempt logged (after its last checkpoint) is never shown twice
//                       and every reader (EventAccumulator, TensorBoard's data server) sees each step once.
//   The copy is written under a name without "tfevents" (TensorBoard ignores it), fsynced, then the earlier files
//   are removed and it is renamed into place; a leftover copy from a crash in between is removed by the next Open.
//
// Thread-safety: one thread at a time. Ownership: owns its open file (closed by the destructor).
//
// Example:
//   ASSIGN_OR_RETURN(auto tb, TensorBoardWriter::Open(output_dir, resume_step));
//   RETURN_IF_ERROR(tb->Add(step, {{"train/loss", 1.25}, {"train/learning_rate", 1e-4}}));
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace anneal::report {

using Scalars = std::vector<std::pair<std::string, double>>;

class TensorBoardWriter {
 public:
  // Errors: INTERNAL naming the path when a directory or file cannot be created, read or written; DATA_LOSS when
  // an earlier attempt's file is corrupt (not merely torn at its end).
  static StatusOr<std::unique_ptr<TensorBoardWriter>> Open(const std::string& output_dir, int64_t resume_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One Event at `step` holding every scalar (stored as float32, as TensorBoard's simple_value is).
  // Errors: INTERNAL naming the file when the write fails.
  Status Add(int64_t step, const Scalars& scalars);

  const std::string& run_dir() const { return run_dir_; }
  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter(std::string run_dir, std::string path, std::FILE* file)
      : run_dir_(std::move(run_dir)), path_(std::move(path)), file_(file) {}
  Status WriteRecord(const std::string& data);

  std::string run_dir_;
  std::string path_;
  std::FILE* file_;
};

// The event files in `run_dir` (names holding "tfevents"), sorted by name: the order TensorBoard reads them in.
std::vector<std::string> EventFiles(const std::string& run_dir);

}  // namespace anneal::report
