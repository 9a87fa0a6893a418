// Fuzz target: safetensors headers (trainer/model/safetensors_header.h, the reader's LibTorch-free checker).
// Input: a whole .safetensors file. Whatever ParseSafetensorsFile accepts must be safe to map: every tensor's
// bytes inside the file, its byte size exactly elements * element size (computed without wrap-around), no
// two tensors sharing a byte.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/fuzz/fuzz_support.h"
#include "trainer/model/safetensors_header.h"

using anneal::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  auto layout = anneal::model::ParseSafetensorsFile(file, size, "fuzz.safetensors");
  if (!layout.ok()) {
    FuzzCheck(!layout.status().message().empty(), "a refused file has an error message");
    return 0;
  }
  FuzzCheck(layout->data_start >= 8 && layout->data_start <= size, "the data buffer starts inside the file");
  const uint64_t data_size = size - layout->data_start;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : layout->entries) {
    FuzzCheck(e.begin <= e.end && e.end <= data_size, "a tensor's bytes lie inside the data buffer");
    unsigned __int128 bytes = anneal::model::SafetensorsElementSize(e.dtype);
    FuzzCheck(bytes != 0, "an accepted tensor has a known dtype");
    for (const int64_t dim : e.shape) FuzzCheck(dim >= 0, "dims are non-negative");
    const bool empty = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
    for (const int64_t dim : e.shape) {
      if (empty) bytes = 0;
      if (empty || bytes > data_size) break;  // zero elements, or already too large for the buffer
      bytes *= static_cast<uint64_t>(dim);
    }
    FuzzCheck(bytes == e.end - e.begin, "a tensor's byte size is elements * element size");
    if (e.end > e.begin) ranges.emplace_back(e.begin, e.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    FuzzCheck(ranges[i].first >= ranges[i - 1].second, "no two tensors share a byte");
  }
  return 0;
}
