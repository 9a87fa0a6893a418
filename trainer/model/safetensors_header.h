// The safetensors header (the format of Hugging Face weights), parsed and validated without LibTorch, so the
// reader (trainer/model/safetensors.h), the fuzz target (bench/fuzz) and the daemons' tests share one checker.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the data buffer. Validation, before any data is touched: N within 100 MiB and within the file, the JSON
// an object, __metadata__ an object of strings, every tensor with a known dtype (F64 I64 U64 F32 I32 U32 F16
// BF16 I16 U16 I8 U8 BOOL F8_E4M3 F8_E5M2), non-negative integer dims whose element count and byte size do not
// overflow, data_offsets [begin, end] with end - begin == elements * element size, and the tensors tiling the
// data buffer exactly (sorted by begin, no gap, no overlap, covering every byte).
// Errors: DATA_LOSS naming the source and the tensor (INVALID_ARGUMENT for an unsupported dtype).
//
// Thread-safety: pure functions.
//
// Example:
//   ASSIGN_OR_RETURN(SafetensorsLayout layout, ParseSafetensorsFile(first_bytes, file_size, path));
//   for (auto& [name, e] : layout.entries) ... file bytes [layout.data_start + e.begin, layout.data_start + e.end)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::model {

// Headers above this are refused as corrupt (the format's reference implementation uses 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data buffer
  uint64_t end = 0;
};

// Bytes per element of a safetensors dtype name; 0 when unknown.
size_t SafetensorsElementSize(std::string_view dtype);

// Validates a header (the JSON text) against a data buffer of `data_size` bytes. `source` names the file in
// errors; `metadata` (optional) receives __metadata__.
StatusOr<std::map<std::string, SafetensorsEntry>> ParseSafetensorsHeader(const std::string& header_json,
                                                                         uint64_t data_size, const std::string& source,
                                                                         std::map<std::string, std::string>* metadata);

struct SafetensorsLayout {
  uint64_t data_start = 0;  // 8 + header length
  std::map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
};

// Validates a whole file's framing: `file` holds at least its first 8 + N bytes (the whole file is fine),
// `file_size` is the file's size. DATA_LOSS for a file under 8 bytes or a header length past the file.
StatusOr<SafetensorsLayout> ParseSafetensorsFile(std::string_view file, uint64_t file_size, const std::string& source);

}  // namespace anneal::model
