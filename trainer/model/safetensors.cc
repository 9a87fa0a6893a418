#include "trainer/model/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"

namespace anneal::model {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

}  // namespace

std::string DtypeToSafetensors(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "F32";
    case at::kHalf:
      return "F16";
    case at::kBFloat16:
      return "BF16";
    case at::kDouble:
      return "F64";
    case at::kLong:
      return "I64";
    case at::kInt:
      return "I32";
    case at::kShort:
      return "I16";
    case at::kChar:
      return "I8";
    case at::kByte:
      return "U8";
    case at::kBool:
      return "BOOL";
    default:
      return "";
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
  ASSIGN_OR_RETURN(SafetensorsLayout layout,
                   ParseSafetensorsFile(std::string_view(static_cast<const char*>(map), size), size, path));
  file->data_start_ = layout.data_start;
  file->entries_ = std::move(layout.entries);
  file->metadata_ = std::move(layout.metadata);
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
      if (file.find('/') != std::string::npos)
        return DataLossError(index + ": shard '" + file + "' is not a file name");
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

StatusOr<at::Tensor> SafetensorsCheckpoint::Tensor(const std::string& name, std::optional<at::ScalarType> dtype) const {
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
