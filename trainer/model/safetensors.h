// safetensors reader and writer (the format of Hugging Face weights), with sharded checkpoints.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the data buffer. The reader validates everything before touching data (ParseSafetensorsFile,
// trainer/model/safetensors_header.h, LibTorch-free): header length within bounds, JSON an object, known dtypes,
// shape * element size == end - begin without overflow, offsets contiguous, non-overlapping and covering the
// whole buffer. A corrupt or truncated file is a DATA_LOSS / INVALID_ARGUMENT error naming the file and the
// tensor, never a crash.
//
// Reads are memory-mapped: Tensor() returns a CPU tensor viewing the mapping (kept alive by the tensor), or a
// converted copy when a dtype is requested.
//
// Thread-safety: a SafetensorsFile is immutable after Open; concurrent Tensor() calls are safe.
//
// Example:
//   ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open("model.safetensors"));
//   ASSIGN_OR_RETURN(torch::Tensor w, file->Tensor("lm_head.weight", torch::kFloat32));
//   RETURN_IF_ERROR(WriteSafetensors("out.safetensors", {{"w", w}}, {{"format", "pt"}}));
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "trainer/model/safetensors_header.h"

namespace anneal::model {

class SafetensorsFile {
 public:
  static StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Contains(const std::string& name) const { return entries_.count(name) != 0; }

  // The tensor `name`; with `dtype`, converted (a copy). Without, a zero-copy view of the mapping.
  StatusOr<at::Tensor> Tensor(const std::string& name, std::optional<at::ScalarType> dtype = std::nullopt) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  size_t data_start_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<SafetensorsFile> self_;
};

// Writes tensors (any device; copied to CPU, made contiguous) to `path` atomically (tmp file, fsync, rename).
Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// A set of safetensors files seen as one: a directory with model.safetensors, or with a sharded
// model.safetensors.index.json (weight_map name -> file), or any single file. `prefix` selects the file stem
// ("model" for HF models, "adapter_model" for PEFT adapters).
class SafetensorsCheckpoint {
 public:
  static StatusOr<SafetensorsCheckpoint> Open(const std::string& dir, const std::string& prefix = "model");
  std::vector<std::string> Names() const;
  bool Contains(const std::string& name) const { return file_of_.count(name) != 0; }
  StatusOr<at::Tensor> Tensor(const std::string& name, std::optional<at::ScalarType> dtype = std::nullopt) const;
  const SafetensorsEntry* Entry(const std::string& name) const;

 private:
  std::map<std::string, std::shared_ptr<SafetensorsFile>> file_of_;
};

// Writes `tensors` under `dir` as `<prefix>.safetensors`, or, past `max_shard_bytes`, as
// `<prefix>-0000i-of-0000n.safetensors` plus `<prefix>.safetensors.index.json` as HF does.
Status WriteSafetensorsCheckpoint(const std::string& dir, const std::string& prefix,
                                  const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                  uint64_t max_shard_bytes = 5ull << 30);

std::string DtypeToSafetensors(at::ScalarType t);
std::optional<at::ScalarType> SafetensorsToDtype(const std::string& s);

}  // namespace anneal::model
