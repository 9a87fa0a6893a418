#include "trainer/model/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace anneal::model {
namespace {

using json = nlohmann::json;

std::string U64(uint64_t v) {
  return std::to_string(v);
}

// One tensor's entry, validated on its own (the tiling is checked over all of them afterwards).
StatusOr<SafetensorsEntry> ParseEntry(const std::string& name, const json& v, const std::string& source) {
  const std::string where = source + ": tensor '" + name + "'";
  if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
    return DataLossError(where + ": entry needs dtype, shape and data_offsets");
  }
  SafetensorsEntry e;
  e.name = name;
  if (!v["dtype"].is_string()) return DataLossError(where + ": dtype is not a string");
  e.dtype = v["dtype"].get<std::string>();
  const uint64_t elem = SafetensorsElementSize(e.dtype);
  if (elem == 0) return InvalidArgumentError(where + ": unsupported dtype '" + e.dtype + "'");
  if (!v["shape"].is_array()) return DataLossError(where + ": shape is not a list");
  // The byte size (elements * element size) stays below 2^62, so neither product can wrap around.
  constexpr uint64_t kMaxBytes = uint64_t{1} << 62;
  uint64_t numel = 1;
  for (const auto& d : v["shape"]) {
    if (!d.is_number_unsigned()) return DataLossError(where + ": shape has a non-integer or negative dim");
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > kMaxBytes / elem / dim) return DataLossError(where + ": shape overflows");
    numel *= dim;
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    return DataLossError(where + ": data_offsets must be [begin, end]");
  }
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.end < e.begin) return DataLossError(where + ": data_offsets end < begin");
  if (e.end - e.begin != numel * elem) {
    return DataLossError(where + ": " + U64(e.end - e.begin) + " bytes for shape of " + U64(numel) + " " + e.dtype +
                         " elements (expected " + U64(numel * elem) + ")");
  }
  return e;
}

}  // namespace

size_t SafetensorsElementSize(std::string_view dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  return 0;
}

StatusOr<std::map<std::string, SafetensorsEntry>> ParseSafetensorsHeader(const std::string& header_json,
                                                                         uint64_t data_size, const std::string& source,
                                                                         std::map<std::string, std::string>* metadata) {
  json h = json::parse(header_json, nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded()) return DataLossError(source + ": corrupt safetensors header: not valid JSON");
  if (!h.is_object()) return DataLossError(source + ": corrupt safetensors header: not a JSON object");
  std::map<std::string, SafetensorsEntry> entries;
  for (const auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return DataLossError(source + ": __metadata__ is not an object");
      for (const auto& [k, mv] : v.items()) {
        if (!mv.is_string()) return DataLossError(source + ": __metadata__." + k + " is not a string");
        if (metadata) (*metadata)[k] = mv.get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(name, v, source));
    entries.emplace(name, std::move(e));
  }
  // Offsets must tile the buffer exactly: sorted by begin, each starts where the previous ended.
  std::vector<const SafetensorsEntry*> order;
  for (const auto& [_, e] : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  uint64_t cursor = 0;
  for (const auto* e : order) {
    if (e->begin != cursor) {
      return DataLossError(source + ": tensor '" + e->name + "' starts at byte " + U64(e->begin) +
                           " of the data buffer, expected " + U64(cursor) + " (offsets overlap or leave a gap)");
    }
    cursor = e->end;
  }
  if (cursor != data_size) {
    return DataLossError(source + ": tensors cover " + U64(cursor) + " bytes but the data buffer has " +
                         U64(data_size) + " (truncated or trailing garbage)");
  }
  return entries;
}

StatusOr<SafetensorsLayout> ParseSafetensorsFile(std::string_view file, uint64_t file_size, const std::string& source) {
  if (file_size < 8 || file.size() < 8) {
    return DataLossError(source + ": truncated safetensors file (" + U64(file_size) + " bytes, no header)");
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);  // little-endian on every platform we build for
  if (header_len > kMaxSafetensorsHeaderBytes || header_len > file_size - 8 || header_len > file.size() - 8) {
    return DataLossError(source + ": corrupt or truncated safetensors file: header length " + U64(header_len) +
                         " exceeds the file (" + U64(file_size) + " bytes)");
  }
  SafetensorsLayout layout;
  layout.data_start = 8 + header_len;
  ASSIGN_OR_RETURN(layout.entries, ParseSafetensorsHeader(std::string(file.substr(8, header_len)),
                                                          file_size - layout.data_start, source, &layout.metadata));
  return layout;
}

}  // namespace anneal::model
