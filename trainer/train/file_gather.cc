#include "trainer/train/file_gather.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

namespace anneal::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int64_t kMaxListingBytes = int64_t{256} << 20;
constexpr int64_t kMaxFiles = int64_t{1} << 20;

// The node this rank runs on: GROUP_RANK (set by the agent and by torchrun); without it every rank counts as its
// own node, which only costs duplicate listings (rank 0 asks for each file once).
int64_t NodeOf(const Runtime& rt) {
  const char* v = std::getenv("GROUP_RANK");
  if (v == nullptr || *v == '\0') return rt.rank;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  return end != v && *end == '\0' && n >= 0 ? n : rt.rank;
}

// Collectives on CPU tensors: NCCL moves CUDA tensors only, Gloo CPU ones, so they travel on the runtime's device.
void Broadcast(const Runtime& rt, at::Tensor& t) {
  at::Tensor d = t.to(rt.device);
  rt.world_comm->Broadcast(d, 0);
  t = d.cpu();
}

void AllReduceSum(const Runtime& rt, at::Tensor& t) {
  at::Tensor d = t.to(rt.device);
  rt.world_comm->AllReduceSum(d);
  t = d.cpu();
}

void SendTo(const Runtime& rt, const at::Tensor& t, int dst) {
  rt.world_comm->Send(t.to(rt.device), dst);
}

at::Tensor RecvFrom(const Runtime& rt, int64_t n, at::ScalarType dtype, int src) {
  at::Tensor t = torch::empty({n}, torch::TensorOptions().dtype(dtype).device(rt.device));
  rt.world_comm->Recv(t, src);
  return t.cpu();
}

Status WriteMarker(const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << "anneal file-gather probe\n";
  out.close();
  if (!out) return InternalError(c10::str("cannot write ", path, ": ", std::strerror(errno)));
  return Status::Ok();
}

// A listed path rank 0 may write: relative, inside the directory, no "." / ".." parts.
bool SafeRelative(const std::string& p) {
  if (p.empty() || p.size() > 4096 || p.front() == '/') return false;
  for (const auto& part : fs::path(p)) {
    if (part == ".." || part == "." || part.empty()) return false;
  }
  return true;
}

std::vector<std::pair<std::string, int64_t>> ListFiles(const std::string& dir,
                                                       const std::function<bool(const std::string&)>& wanted) {
  std::vector<std::pair<std::string, int64_t>> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string rel = fs::relative(it->path(), dir, ec).string();
    if (!ec && wanted(rel)) files.emplace_back(rel, static_cast<int64_t>(it->file_size(ec)));
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Sender side: listing, flags, then each wanted file's bytes. Once the listing is out, exactly the promised bytes
// go out even when a read fails (zeros then), so rank 0 never waits for bytes that do not come; the error is
// returned and the caller's agreement keeps rank 0 from committing.
Status SendFiles(const Runtime& rt, const std::string& dir, const std::function<bool(const std::string&)>& wanted,
                 bool remove_sent) {
  const auto files = ListFiles(dir, wanted);
  json listing = json::array();
  for (const auto& [path, size] : files) listing.push_back({path, size});
  const std::string text = listing.dump();
  // Header [listing bytes, files]: rank 0 answers with one flag per file even when it cannot read the listing.
  SendTo(rt, torch::tensor({static_cast<int64_t>(text.size()), static_cast<int64_t>(files.size())}, torch::kInt64), 0);
  at::Tensor bytes = torch::empty({static_cast<int64_t>(text.size())}, torch::kUInt8);
  std::memcpy(bytes.data_ptr(), text.data(), text.size());
  SendTo(rt, bytes, 0);
  if (files.empty()) return Status::Ok();
  const at::Tensor flags = RecvFrom(rt, static_cast<int64_t>(files.size()), torch::kInt64, 0);
  Status first = Status::Ok();
  for (size_t i = 0; i < files.size(); ++i) {
    if (flags[static_cast<int64_t>(i)].item<int64_t>() == 0) continue;
    const auto& [rel, size] = files[i];
    std::ifstream in(dir + "/" + rel, std::ios::binary);
    for (int64_t sent = 0; sent < size;) {
      const int64_t n = std::min(FileGather::kChunkBytes, size - sent);
      at::Tensor chunk = torch::zeros({n}, torch::kUInt8);
      in.read(reinterpret_cast<char*>(chunk.data_ptr()), n);
      if (in.gcount() != n && first.ok()) {
        first = DataLossError(
            c10::str("reading ", dir, "/", rel, " to send it to rank 0: ", sent + in.gcount(), " of ", size, " bytes"));
      }
      SendTo(rt, chunk, 0);
      sent += n;
    }
    std::error_code ec;
    if (remove_sent) fs::remove(dir + "/" + rel, ec);
  }
  return first;
}

Status WriteReceived(const Runtime& rt, int src, const std::string& path, int64_t size) {
  const std::string part = path + ".part";
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  Status st = fd < 0 ? InternalError(c10::str("cannot create ", part, ": ", std::strerror(errno))) : Status::Ok();
  for (int64_t got = 0; got < size;) {  // every chunk is received, also after a failed write
    const int64_t n = std::min(FileGather::kChunkBytes, size - got);
    const at::Tensor chunk = RecvFrom(rt, n, torch::kUInt8, src);
    if (st.ok() && ::write(fd, chunk.data_ptr(), static_cast<size_t>(n)) != n) {
      st = InternalError(c10::str("writing ", part, ": ", std::strerror(errno)));
    }
    got += n;
  }
  if (fd >= 0) {
    if (st.ok() && ::fsync(fd) != 0) st = InternalError(c10::str("fsync ", part, ": ", std::strerror(errno)));
    ::close(fd);
  }
  if (st.ok()) fs::rename(part, path, ec);
  if (st.ok() && ec) st = InternalError(c10::str("renaming ", part, " into place: ", ec.message()));
  return st;
}

// Rank 0 side. Always answers the flags (all zero after a bad listing) so the sender never waits.
StatusOr<int64_t> ReceiveFiles(const Runtime& rt, const std::string& dir, int src) {
  const at::Tensor header = RecvFrom(rt, 2, torch::kInt64, src);
  const int64_t length = header[0].item<int64_t>(), count = header[1].item<int64_t>();
  if (length <= 0 || length > kMaxListingBytes || count < 0 || count > kMaxFiles) {
    return DataLossError(c10::str("rank ", src, " announced a listing of ", length, " bytes and ", count, " files for ",
                                  dir, ": out of bounds"));
  }
  const at::Tensor bytes = RecvFrom(rt, length, torch::kUInt8, src);
  const std::string text(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(length));
  const json listing = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (count == 0) return int64_t{0};
  Status st =
      listing.is_array() && static_cast<int64_t>(listing.size()) == count
          ? Status::Ok()
          : DataLossError(c10::str("rank ", src, " sent a listing of ", dir, " that is not ", count, " files as JSON"));
  std::vector<std::pair<std::string, int64_t>> files(static_cast<size_t>(count));
  for (size_t i = 0; st.ok() && i < files.size(); ++i) {
    const json& f = listing[i];
    const bool ok = f.is_array() && f.size() == 2 && f[0].is_string() && f[1].is_number_integer();
    const std::string rel = ok ? f[0].get<std::string>() : "";
    if (st.ok() && (!ok || !SafeRelative(rel) || f[1].get<int64_t>() < 0)) {
      st = DataLossError(
          c10::str("rank ", src, " listed ", f.dump(), " for ", dir, ": not a relative path inside it with a size"));
    }
    files[i] = {rel, ok ? f[1].get<int64_t>() : 0};
  }
  at::Tensor flags = torch::zeros({static_cast<int64_t>(files.size())}, torch::kInt64);
  for (size_t i = 0; st.ok() && i < files.size(); ++i) {
    flags[static_cast<int64_t>(i)] = fs::exists(dir + "/" + files[i].first) ? 0 : 1;
  }
  SendTo(rt, flags, src);
  if (!st.ok()) return st;
  int64_t received = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (flags[static_cast<int64_t>(i)].item<int64_t>() == 0) continue;
    Status w = WriteReceived(rt, src, dir + "/" + files[i].first, files[i].second);
    if (st.ok()) st = w;
    ++received;
  }
  if (!st.ok()) return st;
  return received;
}

}  // namespace

StatusOr<FileGather> FileGather::Probe(const Runtime& rt, const std::string& dir, bool reset_remote) {
  FileGather g;
  g.dir_ = dir;
  if (rt.world == 1 || !rt.world_comm) return g;
  std::error_code ec;
  at::Tensor nonce = torch::zeros({1}, torch::kInt64);
  if (rt.rank == 0) {
    std::random_device rd;
    const int64_t v = static_cast<int64_t>(((uint64_t{rd()} << 32) | rd()) >> 1) | 1;
    fs::create_directories(dir, ec);
    Status wrote = WriteMarker(c10::str(dir, "/.anneal-gather-probe-", v));
    nonce[0] = wrote.ok() ? v : -1;
  }
  Broadcast(rt, nonce);
  const int64_t v = nonce[0].item<int64_t>();
  const std::string marker = c10::str(dir, "/.anneal-gather-probe-", v);
  const bool sees = rt.rank == 0 || (v > 0 && fs::exists(marker));
  at::Tensor info =
      torch::zeros({rt.world, 2}, torch::kInt64);  // [rank] = (node + 1, 1 if it cannot see rank 0's disk)
  info[rt.rank][0] = NodeOf(rt) + 1;
  info[rt.rank][1] = sees ? 0 : 1;
  AllReduceSum(rt, info);
  if (rt.rank == 0) fs::remove(marker, ec);
  if (v < 0) return InternalError(c10::str("rank 0 cannot write into ", dir, " (checked before gathering files)"));
  std::vector<int64_t> nodes_seen;
  for (int r = 0; r < rt.world; ++r) {
    const int64_t node = info[r][0].item<int64_t>();
    if (info[r][1].item<int64_t>() == 0 || std::count(nodes_seen.begin(), nodes_seen.end(), node) > 0) continue;
    nodes_seen.push_back(node);
    g.senders_.push_back(r);  // ranks ascend: the node's lowest blind rank
  }
  g.i_send_ = std::count(g.senders_.begin(), g.senders_.end(), rt.rank) > 0;
  if (g.i_send_ && reset_remote) fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  rt.Barrier();
  return g;
}

StatusOr<int64_t> FileGather::Gather(const Runtime& rt, const std::function<bool(const std::string&)>& wanted,
                                     bool remove_sent) const {
  if (senders_.empty()) return int64_t{0};
  Status st = Status::Ok();
  int64_t received = 0;
  for (int s : senders_) {
    if (rt.rank == s) {
      st = SendFiles(rt, dir_, wanted, remove_sent);
    } else if (rt.rank == 0) {
      StatusOr<int64_t> got = ReceiveFiles(rt, dir_, s);
      if (got.ok()) received += *got;
      if (st.ok() && !got.ok()) st = got.status();
    }
  }
  // Every rank learns whether any failed: rank 0 must not commit what a sender could not send whole.
  if (rt.AnyOverWorld(!st.ok())) {
    if (!st.ok()) return st;
    return DataLossError(c10::str("gathering the files of ", dir_, " from the other nodes failed on another rank"));
  }
  return received;
}

void FileGather::RemoveRemoteCopy() const {
  if (!i_send_) return;
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

}  // namespace anneal::train
