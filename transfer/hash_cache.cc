#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"
#include "transfer/manifest.h"

namespace anneal::transfer {
namespace {

struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t inode = 0;
  bool operator==(const FileStamp&) const = default;
};

StatusOr<FileStamp> Stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return NotFoundError(fmt::format("{}: no such file", path));
    return UnavailableError(fmt::format("cannot stat {}: {}", path, ErrnoText(err)));
  }
  return FileStamp{static_cast<uint64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                   static_cast<uint64_t>(st.st_ino)};
}

}  // namespace

HashCache::HashCache(std::string persist_path) : persist_path_(std::move(persist_path)) {
  Load();
}

HashCache::~HashCache() {
  if (Status st = Flush(); !st.ok()) spdlog::warn("hash cache: {}", st.ToString());
}

void HashCache::Load() {
  if (persist_path_.empty()) return;
  auto text = ReadFile(persist_path_);
  if (!text.ok()) return;  // first start
  const nlohmann::json doc = nlohmann::json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("files") || !doc["files"].is_object()) {
    spdlog::warn("hash cache {} is not valid JSON: starting empty (files are hashed again)", persist_path_);
    return;
  }
  for (const auto& [path, e] : doc["files"].items()) {
    if (!e.is_array() || e.size() != 4 || !e[0].is_number_unsigned() || !e[1].is_number_integer() ||
        !e[2].is_number_unsigned() || !e[3].is_string()) {
      continue;
    }
    Entry entry{e[0].get<uint64_t>(), e[1].get<int64_t>(), e[2].get<uint64_t>(), e[3].get<std::string>()};
    // Entries of files that are gone or changed are dropped here, once per start, so the file does not grow
    // with every tree the node ever served.
    auto now = Stamp(path);
    if (!now.ok() || !(*now == FileStamp{entry.size, entry.mtime_ns, entry.inode})) {
      dirty_ = true;
      continue;
    }
    entries_[path] = std::move(entry);
  }
}

Status HashCache::Flush() {
  std::string text;
  {
    std::lock_guard lock(mu_);
    if (persist_path_.empty() || !dirty_) return Status::Ok();
    nlohmann::json files = nlohmann::json::object();
    for (const auto& [path, e] : entries_) files[path] = {e.size, e.mtime_ns, e.inode, e.sha256};
    text = nlohmann::json{{"files", std::move(files)}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dirty_ = false;
  }
  Status st = WriteFileAtomic(persist_path_, text, 0600);
  if (!st.ok()) {
    std::lock_guard lock(mu_);
    dirty_ = true;
  }
  return st;
}

StatusOr<std::string> HashCache::Sha256(const std::string& abs_path) {
  ASSIGN_OR_RETURN(FileStamp before, Stamp(abs_path));
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(abs_path);
    if (it != entries_.end() && FileStamp{it->second.size, it->second.mtime_ns, it->second.inode} == before) {
      return it->second.sha256;
    }
  }
  ASSIGN_OR_RETURN(std::string sha, Sha256File(abs_path));
  ASSIGN_OR_RETURN(FileStamp after, Stamp(abs_path));
  if (!(after == before)) {
    return UnavailableError(fmt::format("{} changed while hashing (size or mtime differs): try again", abs_path));
  }
  std::lock_guard lock(mu_);
  ++hashes_computed_;
  entries_[abs_path] = Entry{before.size, before.mtime_ns, before.inode, sha};
  dirty_ = true;
  return sha;
}

Status HashCache::Remember(const std::string& abs_path, const std::string& sha256) {
  ASSIGN_OR_RETURN(FileStamp now, Stamp(abs_path));
  std::lock_guard lock(mu_);
  entries_[abs_path] = Entry{now.size, now.mtime_ns, now.inode, sha256};
  dirty_ = true;
  return Status::Ok();
}

uint64_t HashCache::hashes_computed() const {
  std::lock_guard lock(mu_);
  return hashes_computed_;
}

size_t HashCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace anneal::transfer
