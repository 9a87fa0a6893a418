#include "trainer/model/safetensors_stream.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"
#include "trainer/model/safetensors.h"

namespace anneal::model {
namespace {

using json = nlohmann::json;

Status WriteAll(int fd, const std::string& name, const char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ResourceExhaustedError("cannot write " + name + ": " + ErrnoText(errno));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

std::string ShapeText(c10::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

StatusOr<std::unique_ptr<SafetensorsStreamWriter>> SafetensorsStreamWriter::Open(
    const std::string& path, std::vector<Entry> entries, const std::map<std::string, std::string>& metadata) {
  // The header exactly as WriteSafetensors builds it (the same json object: keys sorted, offsets in order).
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Entry& e : entries) {
    const std::string dt = DtypeToSafetensors(e.dtype);
    if (dt.empty()) return InvalidArgumentError("tensor '" + e.name + "': dtype cannot be written to safetensors");
    if (header.contains(e.name)) return InvalidArgumentError("tensor '" + e.name + "' given twice");
    int64_t numel = 1;
    for (int64_t d : e.shape) numel *= d;
    const uint64_t bytes = static_cast<uint64_t>(numel) * c10::elementSize(e.dtype);
    header[e.name] = {{"dtype", dt}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::unique_ptr<SafetensorsStreamWriter> w(new SafetensorsStreamWriter());
  w->path_ = path;
  w->tmp_ = path + ".tmp-" + std::to_string(::getpid());
  w->entries_ = std::move(entries);
  ::unlink(w->tmp_.c_str());
  w->fd_ = ::open(w->tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return PermissionDeniedError("cannot create " + w->tmp_ + ": " + ErrnoText(errno));
  const uint64_t hl = h.size();
  RETURN_IF_ERROR(WriteAll(w->fd_, w->tmp_, reinterpret_cast<const char*>(&hl), 8));
  RETURN_IF_ERROR(WriteAll(w->fd_, w->tmp_, h.data(), h.size()));
  return w;
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

Status SafetensorsStreamWriter::Append(const at::Tensor& t) {
  if (fd_ < 0 || next_ >= entries_.size()) {
    return InvalidArgumentError(path_ + ": a tensor appended after the " + std::to_string(entries_.size()) +
                                " announced in the header");
  }
  const Entry& e = entries_[next_];
  if (t.scalar_type() != e.dtype || t.sizes().vec() != e.shape) {
    return InvalidArgumentError(path_ + ": tensor '" + e.name + "' announced as " + DtypeToSafetensors(e.dtype) + " " +
                                ShapeText(e.shape) + ", appended as " + DtypeToSafetensors(t.scalar_type()) + " " +
                                ShapeText(t.sizes()));
  }
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();
  RETURN_IF_ERROR(
      WriteAll(fd_, tmp_, static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * c.element_size()));
  ++next_;
  return Status::Ok();
}

Status SafetensorsStreamWriter::Close() {
  if (fd_ < 0) return FailedPreconditionError(path_ + ": closed already");
  if (next_ != entries_.size()) {
    return FailedPreconditionError(path_ + ": " + std::to_string(next_) + " of " + std::to_string(entries_.size()) +
                                   " tensors appended (next: '" + entries_[next_].name + "')");
  }
  const bool synced = ::fsync(fd_) == 0;
  const int err = errno;
  ::close(fd_);
  fd_ = -1;
  if (!synced) {
    ::unlink(tmp_.c_str());
    return InternalError("fsync " + tmp_ + ": " + ErrnoText(err));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int rename_err = errno;
    ::unlink(tmp_.c_str());
    return InternalError("rename " + tmp_ + " -> " + path_ + ": " + ErrnoText(rename_err));
  }
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  return FsyncPath(dir.empty() ? "." : dir);
}

}  // namespace anneal::model
