#include "trainer/data/token_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "trainer/data/tokenizer.h"

namespace anneal::data {
namespace fs = std::filesystem;

std::string CacheKey(const std::vector<std::string>& parts) {
  uint64_t h = Fnv1a64("anneal-token-cache-v1");
  for (const auto& p : parts) {
    h = Fnv1a64(std::to_string(p.size()) + ":", h);
    h = Fnv1a64(p, h);
  }
  return fmt::format("{:016x}", h);
}

StatusOr<std::string> FileChecksum(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFoundError("cannot open " + path);
  uint64_t h = Fnv1a64("");
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = Fnv1a64(std::string_view(buf.data(), static_cast<size_t>(f.gcount())), h);
  }
  return fmt::format("{:016x}", h);
}

namespace {

Status Errno(const std::string& what) { return InternalError(what + ": " + std::strerror(errno)); }

class FileWriter : public TokenCacheWriter {
 public:
  explicit FileWriter(const fs::path& dir) : dir_(dir) {}
  Status Open() {
    ids_.open(dir_ / "input_ids.bin", std::ios::binary);
    labels_.open(dir_ / "labels.bin", std::ios::binary);
    index_.open(dir_ / "index.bin", std::ios::binary);
    if (!ids_ || !labels_ || !index_) return Errno("cannot create cache files in " + dir_.string());
    WriteOffset();
    return Status::Ok();
  }
  Status Add(std::span<const int32_t> ids, std::span<const int32_t> labels) override {
    if (ids.size() != labels.size())
      return InvalidArgumentError(
          fmt::format("cache example {}: {} ids but {} labels", num_examples_, ids.size(), labels.size()));
    ids_.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size_bytes()));
    labels_.write(reinterpret_cast<const char*>(labels.data()), static_cast<std::streamsize>(labels.size_bytes()));
    num_tokens_ += static_cast<int64_t>(ids.size());
    ++num_examples_;
    WriteOffset();
    return Status::Ok();
  }
  Status Finish(const std::string& key, const std::string& description) {
    ids_.close();
    labels_.close();
    index_.close();
    nlohmann::json meta = {{"key", key}, {"num_examples", num_examples_}, {"num_tokens", num_tokens_},
                           {"description", description}};
    std::ofstream m(dir_ / "meta.json");
    m << meta.dump(2) << "\n";
    m.close();
    if (!ids_ || !labels_ || !index_ || !m) return Errno("writing the cache in " + dir_.string());
    // Make the data durable before the rename publishes it.
    for (const char* name : {"input_ids.bin", "labels.bin", "index.bin", "meta.json"}) {
      int fd = ::open((dir_ / name).c_str(), O_RDONLY);
      if (fd >= 0) { ::fsync(fd); ::close(fd); }
    }
    return Status::Ok();
  }

 private:
  // index.bin is written as examples arrive (nothing grows with the dataset in memory).
  void WriteOffset() { index_.write(reinterpret_cast<const char*>(&num_tokens_), sizeof(num_tokens_)); }

  fs::path dir_;
  std::ofstream ids_, labels_, index_;
  int64_t num_examples_ = 0, num_tokens_ = 0;
};

}  // namespace

TokenCache::~TokenCache() {
  for (Mapping* m : {&ids_, &labels_, &index_})
    if (m->addr != nullptr && m->len > 0) ::munmap(m->addr, m->len);
}

static Status MapFile(const fs::path& p, void** addr, size_t* len) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) return Errno("cannot open " + p.string());
  struct stat st {};
  if (::fstat(fd, &st) != 0) { ::close(fd); return Errno("cannot stat " + p.string()); }
  *len = static_cast<size_t>(st.st_size);
  *addr = nullptr;
  if (*len > 0) {
    *addr = ::mmap(nullptr, *len, PROT_READ, MAP_SHARED, fd, 0);
    if (*addr == MAP_FAILED) { *addr = nullptr; ::close(fd); return Errno("cannot mmap " + p.string()); }
  }
  ::close(fd);
  return Status::Ok();
}

StatusOr<std::shared_ptr<TokenCache>> TokenCache::Open(const std::string& cache_dir, const std::string& key) {
  fs::path dir = fs::path(cache_dir) / key;
  std::ifstream mf(dir / "meta.json");
  if (!mf) return NotFoundError("no tokenized cache at " + dir.string());
  nlohmann::json meta = nlohmann::json::parse(mf, nullptr, false);
  if (meta.is_discarded() || meta.value("key", std::string()) != key)
    return DataLossError(dir.string() + "/meta.json: unreadable or for another key");
  auto c = std::shared_ptr<TokenCache>(new TokenCache());
  c->path_ = dir.string();
  c->num_examples_ = meta.value("num_examples", int64_t{0});
  c->num_tokens_ = meta.value("num_tokens", int64_t{0});
  RETURN_IF_ERROR(MapFile(dir / "input_ids.bin", &c->ids_.addr, &c->ids_.len));
  RETURN_IF_ERROR(MapFile(dir / "labels.bin", &c->labels_.addr, &c->labels_.len));
  RETURN_IF_ERROR(MapFile(dir / "index.bin", &c->index_.addr, &c->index_.len));
  size_t want_tokens = static_cast<size_t>(c->num_tokens_) * 4;
  if (c->index_.len != static_cast<size_t>(c->num_examples_ + 1) * 8 || c->ids_.len != want_tokens ||
      c->labels_.len != want_tokens)
    return DataLossError(dir.string() + ": file sizes do not match meta.json (truncated cache?)");
  return c;
}

std::span<const int32_t> TokenCache::input_ids(int64_t i) const {
  const auto* off = static_cast<const int64_t*>(index_.addr);
  return {static_cast<const int32_t*>(ids_.addr) + off[i], static_cast<size_t>(off[i + 1] - off[i])};
}

std::span<const int32_t> TokenCache::labels(int64_t i) const {
  const auto* off = static_cast<const int64_t*>(index_.addr);
  return {static_cast<const int32_t*>(labels_.addr) + off[i], static_cast<size_t>(off[i + 1] - off[i])};
}

StatusOr<std::shared_ptr<TokenCache>> TokenCache::OpenOrBuild(const std::string& cache_dir, const std::string& key,
                                                              const std::string& description, const BuildFn& build,
                                                              double wait_timeout_s) {
  auto found = Open(cache_dir, key);
  if (found.ok() || found.status().code() != StatusCode::kNotFound) return found;
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return InternalError("cannot create cache dir " + cache_dir + ": " + ec.message());
  fs::path lock_path = fs::path(cache_dir) / (key + ".lock");
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open lock file " + lock_path.string());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_timeout_s);
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) { Status s = Errno("flock " + lock_path.string()); ::close(fd); return s; }
    auto again = Open(cache_dir, key);  // another process is building: wait for its result
    if (again.ok()) { ::close(fd); return again; }
    if (std::chrono::steady_clock::now() > deadline) {
      ::close(fd);
      return DeadlineExceededError(fmt::format(
          "waited {:.0f} s for another process to build the tokenized cache {} (lock {} still held); "
          "remove the lock holder or raise the timeout", wait_timeout_s, (fs::path(cache_dir) / key).string(),
          lock_path.string()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // We hold the lock: the cache may have appeared while we waited for it.
  auto existing = Open(cache_dir, key);
  if (existing.ok()) { ::flock(fd, LOCK_UN); ::close(fd); return existing; }
  fs::path tmp = fs::path(cache_dir) / fmt::format("{}.tmp-{}", key, ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  Status st = ec ? InternalError("cannot create " + tmp.string() + ": " + ec.message()) : Status::Ok();
  if (st.ok()) {
    FileWriter w(tmp);
    st = w.Open();
    if (st.ok()) st = build(w);
    if (st.ok()) st = w.Finish(key, description);
  }
  if (st.ok()) {
    fs::rename(tmp, fs::path(cache_dir) / key, ec);
    if (ec) st = InternalError("cannot publish cache " + tmp.string() + ": " + ec.message());
  }
  if (!st.ok()) fs::remove_all(tmp, ec);
  ::flock(fd, LOCK_UN);
  ::close(fd);
  RETURN_IF_ERROR(st);
  auto c = Open(cache_dir, key);
  if (c.ok()) (*c)->built_here_ = true;
  return c;
}

}  // namespace anneal::data
