#include "trainer/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"

namespace anneal::model {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Headers above this are refused as corrupt (the format's reference implementation uses 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

size_t ElementSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  return 0;
}

}  // namespace

std::string DtypeToSafetensors(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: return "";
  }
}

std::optional<at::ScalarType> SafetensorsToDtype(const std::string& s) {
  if (s == "F32") return at::kFloat;
  if (s == "F16") return at::kHalf;
  if (s == "BF16") return at::kBFloat16;
  if (s == "F64") return at::kDouble;
  if (s == "I64") return at::kLong;
  if (s == "I32") return at::kInt;
  if (s == "I16") return at::kShort;
  if (s == "I8") return at::kChar;
  if (s == "U8") return at::kByte;
  if (s == "BOOL") return at::kBool;
  return std::nullopt;
}

StatusOr<std::map<std::string, SafetensorsEntry>> ParseSafetensorsHeader(
    const std::string& header_json, uint64_t data_size, const std::string& source,
    std::map<std::string, std::string>* metadata) {
  json h = json::parse(header_json, nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded()) return DataLossError(source + ": corrupt safetensors header: not valid JSON");
  if (!h.is_object()) return DataLossError(source + ": corrupt safetensors header: not a JSON object");
  std::map<std::string, SafetensorsEntry> entries;
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return DataLossError(source + ": __metadata__ is not an object");
      for (auto& [k, mv] : v.items()) {
        if (!mv.is_string()) return DataLossError(source + ": __metadata__." + k + " is not a string");
        if (metadata) (*metadata)[k] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = source + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      return DataLossError(where + ": entry needs dtype, shape and data_offsets");
    }
    SafetensorsEntry e;
    e.name = name;
    if (!v["dtype"].is_string()) return DataLossError(where + ": dtype is not a string");
    e.dtype = v["dtype"].get<std::string>();
    const size_t elem = ElementSize(e.dtype);
    if (elem == 0) return InvalidArgumentError(where + ": unsupported dtype '" + e.dtype + "'");
    if (!v["shape"].is_array()) return DataLossError(where + ": shape is not a list");
    uint64_t numel = 1;
    for (auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return DataLossError(where + ": shape has a non-integer or negative dim");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) return DataLossError(where + ": shape overflows");
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
      return DataLossError(c10::str(where, ": ", e.end - e.begin, " bytes for shape of ", numel, " ", e.dtype, " elements (expected ", numel * elem, ")"));
    }
    entries.emplace(name, std::move(e));
  }
  // Offsets must tile the buffer exactly: sorted by begin, each starts where the previous ended.
  std::vector<const SafetensorsEntry*> order;
  for (auto& [_, e] : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (auto* e : order) {
    if (e->begin != cursor) {
      return DataLossError(c10::str(source, ": tensor '", e->name, "' starts at byte ", e->begin, " of the data buffer, expected ", cursor, " (offsets overlap or leave a gap)"));
    }
    cursor = e->end;
  }
  if (cursor != data_size) {
    return DataLossError(c10::str(source, ": tensors cover ", cursor, " bytes but the data buffer has ", data_size, " (truncated or trailing garbage)"));
  }
  return entries;
}

StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError("cannot open safetensors file " + path + ": " + ErrnoText(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return InternalError("cannot stat " + path);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return DataLossError(path + ": truncated safetensors file (" + std::to_string(size) + " bytes, no header)");
  }
  // Copy-on-write: an in-place op on a view changes private pages, never the file.
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return InternalError("cannot mmap " + path + ": " + ErrnoText(errno));
  auto file = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;
  file->self_ = file;
  uint64_t header_len = 0;
  std::memcpy(&header_len, map, 8);  // little-endian on every platform we build for
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return DataLossError(c10::str(path, ": corrupt or truncated safetensors file: header length ", header_len, " exceeds the file (", size, " bytes)"));
  }
  const std::string header(static_cast<const char*>(map) + 8, header_len);
  file->data_start_ = 8 + header_len;
  ASSIGN_OR_RETURN(file->entries_, ParseSafetensorsHeader(header, size - file->data_start_, path, &file->metadata_));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

StatusOr<at::Tensor> SafetensorsFile::Tensor(const std::string& name, std::optional<at::ScalarType> dtype) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return NotFoundError(path_ + ": no tensor named '" + name + "'");
  const SafetensorsEntry& e = it->second;
  auto st = SafetensorsToDtype(e.dtype);
  if (!st) return InvalidArgumentError(path_ + ": tensor '" + name + "': dtype " + e.dtype + " cannot be loaded");
  char* ptr = static_cast<char*>(map_) + data_start_ + e.begin;
  // The view keeps the mapping alive through a shared_ptr captured by the deleter.
  std::shared_ptr<const SafetensorsFile> keep = self_.lock();
  at::Tensor view = at::from_blob(
      ptr, e.shape, [keep](void*) mutable { keep.reset(); }, at::TensorOptions().dtype(*st));
  if (dtype && *dtype != *st) return view.to(*dtype);
  return view;
}

Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const std::string dt = DtypeToSafetensors(t.scalar_type());
    if (dt.empty()) return InvalidArgumentError("tensor '" + name + "': dtype cannot be written to safetensors");
    if (header.contains(name)) return InvalidArgumentError("tensor '" + name + "' given twice");
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dt}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(std::move(c));
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // align the data buffer to 8 bytes as the reference writer does
  std::string out;
  out.reserve(8 + h.size() + offset);
  const uint64_t hl = h.size();
  out.append(reinterpret_cast<const char*>(&hl), 8);
  out.append(h);
  for (const auto& c : cpu) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return WriteFileAtomic(path, out);
}

StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::Open(const std::string& dir, const std::string& prefix) {
  SafetensorsCheckpoint ck;
  auto add_file = [&](const std::string& path) -> Status {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
    for (const auto& [name, _] : file->entries()) ck.file_of_[name] = file;
    return Status::Ok();
  };
  if (fs::is_regular_file(dir)) {
    RETURN_IF_ERROR(add_file(dir));
    return ck;
  }
  const std::string index = dir + "/" + prefix + ".safetensors.index.json";
  const std::string single = dir + "/" + prefix + ".safetensors";
  if (fs::exists(index)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(index));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return DataLossError(index + ": not a valid index (needs a weight_map object)");
    }
    std::map<std::string, std::shared_ptr<SafetensorsFile>> opened;
    for (auto& [name, f] : j["weight_map"].items()) {
      if (!f.is_string()) return DataLossError(index + ": weight_map['" + name + "'] is not a file name");
      const std::string file = f.get<std::string>();
      if (file.find('/') != std::string::npos) return DataLossError(index + ": shard '" + file + "' is not a file name");
      if (!opened.count(file)) {
        ASSIGN_OR_RETURN(opened[file], SafetensorsFile::Open(dir + "/" + file));
      }
      if (!opened[file]->Contains(name)) {
        return DataLossError(index + ": '" + name + "' is mapped to " + file + " which does not contain it");
      }
      ck.file_of_[name] = opened[file];
    }
    return ck;
  }
  if (fs::exists(single)) {
    RETURN_IF_ERROR(add_file(single));
    return ck;
  }
  return NotFoundError("no " + prefix + ".safetensors or " + prefix + ".safetensors.index.json in " + dir);
}

std::vector<std::string> SafetensorsCheckpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& [n, _] : file_of_) names.push_back(n);
  return names;
}

StatusOr<at::Tensor> SafetensorsCheckpoint::Tensor(const std::string& name,
                                                   std::optional<at::ScalarType> dtype) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) return NotFoundError("checkpoint has no tensor named '" + name + "'");
  return it->second->Tensor(name, dtype);
}

const SafetensorsEntry* SafetensorsCheckpoint::Entry(const std::string& name) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) return nullptr;
  return &it->second->entries().at(name);
}

Status WriteSafetensorsCheckpoint(const std::string& dir, const std::string& prefix,
                                  const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                  uint64_t max_shard_bytes) {
  RETURN_IF_ERROR(MakeDirs(dir));
  // Greedy sharding in the given order, as HF's split_torch_state_dict_into_shards does.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  uint64_t current = 0, total = 0;
  for (const auto& nt : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(nt.second.numel()) * nt.second.element_size();
    if (current > 0 && current + bytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(nt);
    current += bytes;
    total += bytes;
  }
  if (shards.size() == 1) {
    std::error_code ec;
    fs::remove(dir + "/" + prefix + ".safetensors.index.json", ec);
    return WriteSafetensors(dir + "/" + prefix + ".safetensors", shards[0]);
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char numbered[64];
    std::snprintf(numbered, sizeof(numbered), "-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    const std::string file = prefix + numbered;
    RETURN_IF_ERROR(WriteSafetensors(dir + "/" + file, shards[i]));
    for (const auto& [name, _] : shards[i]) weight_map[name] = file;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::error_code ec;
  fs::remove(dir + "/" + prefix + ".safetensors", ec);
  return WriteFileAtomic(dir + "/" + prefix + ".safetensors.index.json", index.dump(2));
}

}  // namespace anneal::model
