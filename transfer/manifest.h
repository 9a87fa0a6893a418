// Manifests: the content address of a file tree (every regular file's relative path, size and SHA-256), and the
// hash cache that makes building one cheap the second time.
//
// A manifest lists the regular files under a root, sorted by path ('/'-separated, relative to the root). Its Id()
// is the hex SHA-256 of the canonical listing ("<sha256> <size> <path>\n" per file, in order), so two trees with
// the same files at the same paths have the same id wherever they live: it names a staged model or dataset in
// every node's store (transfer/client.h BlobStore).
//
// BuildManifest(root):
//   - root is a directory: every regular file under it, recursively, dot-files included. A symlink is followed
//     only when it resolves inside the (resolved) root, and is then listed as the file it points to at the
//     symlink's own path; a symlink out of the root, a dangling one, a FIFO, socket or device is refused with
//     PERMISSION_DENIED / INVALID_ARGUMENT naming the path. Empty directories are not listed.
//   - root is a regular file: one entry whose path is the file's name.
//   - more than kMaxManifestFiles files: RESOURCE_EXHAUSTED naming the root.
//
// HashCache remembers each file's SHA-256 keyed by (absolute path, size, mtime ns, inode), so a 14 GB model is
// hashed once per change, not per request. A file that changes while it is hashed (its size or mtime differs
// after the read) is UNAVAILABLE "changed while hashing" and is not cached. With a persist_path, the cache is
// loaded from that JSON file at construction (a missing or corrupt file starts empty, logged; entries of files
// that are gone or changed are dropped) and written back
// atomically by Flush() (BuildManifest flushes when it added entries; the destructor flushes too).
//
// Thread-safety: HashCache is thread-safe (one mutex around the map; hashing happens outside it, so two threads
// may hash the same new file once each). BuildManifest and the JSON functions are stateless.
//
// Example:
//   anneal::transfer::HashCache cache(state_dir + "/hash-cache.json");
//   ASSIGN_OR_RETURN(Manifest m, BuildManifest("/models/llama-3-8b", &cache));
//   spdlog::info("model {} has {} files, {} bytes", m.Id(), m.files.size(), m.total_bytes());
//   const std::string json = ManifestToJson(m);                 // to the coordinator / another node
//   ASSIGN_OR_RETURN(Manifest back, ManifestFromJson(json));     // paths re-checked
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace anneal::transfer {

inline constexpr size_t kMaxManifestFiles = 100000;

struct FileEntry {
  std::string path;  // relative to the root, '/'-separated, no "." / ".." / empty parts
  uint64_t size = 0;
  std::string sha256;  // 64 lowercase hex digits
  bool operator==(const FileEntry&) const = default;
};

struct Manifest {
  std::vector<FileEntry> files;  // sorted by path; a single-file root has one entry with path = its file name
  uint64_t total_bytes() const;
  // Hex SHA-256 of the canonical listing: the content address of the tree.
  std::string Id() const;
  bool operator==(const Manifest&) const = default;
};

// Hex SHA-256 of a whole file (no cache) / of bytes.
StatusOr<std::string> Sha256File(const std::string& path);
std::string Sha256Hex(std::string_view bytes);

// OK when `path` is a relative '/'-separated path of valid UTF-8 (protobuf strings must be) with no empty, "."
// or ".." parts and no NUL;
// INVALID_ARGUMENT naming `path` and what is wrong otherwise.
Status CheckRelativePath(std::string_view path);

class HashCache {
 public:
  explicit HashCache(std::string persist_path = "");
  ~HashCache();
  HashCache(const HashCache&) = delete;
  HashCache& operator=(const HashCache&) = delete;

  // SHA-256 (hex) of the file at abs_path, from the cache when its size, mtime and inode are unchanged.
  // NOT_FOUND / PERMISSION_DENIED / UNAVAILABLE naming the path otherwise.
  StatusOr<std::string> Sha256(const std::string& abs_path);
  // Records `sha256` as the hash of the file at abs_path with its current size, mtime and inode, without reading
  // it: for a caller that has just hashed those bytes itself (a blob entering a store). NOT_FOUND /
  // UNAVAILABLE naming the path when it cannot be stat'ed.
  Status Remember(const std::string& abs_path, const std::string& sha256);
  // Writes the cache to persist_path (atomic rename) when it changed since the last flush; OK without a path.
  Status Flush();
  // How many files were read and hashed (cache misses): tests count them.
  uint64_t hashes_computed() const;
  size_t size() const;

 private:
  struct Entry {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    uint64_t inode = 0;
    std::string sha256;
  };
  void Load();

  std::string persist_path_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  bool dirty_ = false;
  uint64_t hashes_computed_ = 0;
};

// See the header comment. `cache` may be null (every file is hashed).
StatusOr<Manifest> BuildManifest(const std::string& root, HashCache* cache);

// OK when every path passes CheckRelativePath, every sha256 is 64 lowercase hex digits, the paths are sorted
// and unique, and there are at most kMaxManifestFiles entries; INVALID_ARGUMENT naming the entry otherwise.
// (A manifest that came over the wire is checked with this before any of its paths is used.)
Status ValidateManifest(const Manifest& manifest);

// {"files":[{"path":..,"size":..,"sha256":..},...]}
std::string ManifestToJson(const Manifest& manifest);
// INVALID_ARGUMENT naming the entry for bad JSON, a bad path ("..", absolute, empty parts), a bad sha256, an
// unsorted or duplicate path, or more than kMaxManifestFiles entries.
StatusOr<Manifest> ManifestFromJson(std::string_view json);

}  // namespace anneal::transfer
