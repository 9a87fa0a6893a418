// SafetensorsStreamWriter: writes a safetensors file whose tensors arrive one at a time, so the writer never
// holds more than the tensor being written (a ZeRO-3 checkpoint gathers each sharded tensor, writes it and drops
// it). The header comes first, from the entry list (names, dtypes, shapes: every offset is known before any data);
// then each tensor's bytes, in the entries' order, as Append receives them. The file is byte-identical to
// WriteSafetensors' for the same tensors in the same order (tests/unit/trainer/model/safetensors_test.cc), and
// appears atomically: written to <path>.tmp-<pid>, fsynced and renamed by Close. A writer destroyed before Close
// removes its temporary file (the path is untouched).
//
// Thread-safety: one thread at a time.
//
// Example:
//   ASSIGN_OR_RETURN(auto w, SafetensorsStreamWriter::Open(path, {{"w", at::kFloat, {4, 8}}, {"b", at::kFloat, {4}}}));
//   RETURN_IF_ERROR(w->Append(GatherW()));  // [4, 8] float32, then dropped
//   RETURN_IF_ERROR(w->Append(GatherB()));  // [4]
//   RETURN_IF_ERROR(w->Close());
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::model {

class SafetensorsStreamWriter {
 public:
  struct Entry {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  // Creates the temporary file and writes the header. INVALID_ARGUMENT for a dtype safetensors cannot hold or a
  // name given twice; PERMISSION_DENIED when the file cannot be created.
  static StatusOr<std::unique_ptr<SafetensorsStreamWriter>> Open(const std::string& path, std::vector<Entry> entries,
                                                                 const std::map<std::string, std::string>& metadata = {
                                                                     {"format", "pt"}});
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // Writes the next entry's tensor (any device: copied to the CPU, made contiguous). INVALID_ARGUMENT when its
  // dtype or shape is not the entry's, or every entry is written already.
  Status Append(const at::Tensor& t);
  // FAILED_PRECONDITION unless every entry was appended; then fsync, rename to the path, fsync the directory.
  Status Close();
  // Entries appended so far.
  size_t appended() const { return next_; }

 private:
  SafetensorsStreamWriter() = default;
  std::string path_, tmp_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  int fd_ = -1;
};

}  // namespace anneal::model
