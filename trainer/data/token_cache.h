// Tokenized cache on disk: tokenize once, reuse from every rank and every restarted attempt.
//
// Layout of <cache_dir>/<key>/ (key: 16 hex digits of a hash the caller computes from everything that
// changes the tokens: tokenizer.json, the template, the data files' checksums and the options):
//   input_ids.bin  int32 little-endian token ids of all examples back to back
//   labels.bin     int32 labels, same layout
//   index.bin      int64 offsets, num_examples + 1 of them
//   meta.json      {"key", "num_examples", "num_tokens", "description"}; written last: its presence marks a
//                  complete cache
// The writer streams all three files as examples arrive (its memory does not grow with the dataset); readers
// memory-map them read-only (nothing is loaded whole). A builder writes into <key>.tmp-<pid>/ and renames it
// to <key>/ (atomic on one filesystem). Exactly one process per node builds: it holds flock(LOCK_EX) on
// <cache_dir>/<key>.lock; the others poll (every 50 ms) until the cache appears, taking over when the lock
// is released without a cache (a builder that died), or fail with DEADLINE_EXCEEDED after wait_timeout_s
// naming the lock file.
//
// Ownership: a TokenCache owns its mappings; spans it returns are valid while it lives (hold the shared_ptr).
// Thread-safety: a TokenCache is immutable after opening and safe to read from many threads.
//
// Example:
//   auto cache = TokenCache::OpenOrBuild(dir, key, "alpaca x qwen", [&](TokenCacheWriter& w) -> Status {
//     for (auto& ex : examples) RETURN_IF_ERROR(w.Add(ex.input_ids, ex.labels));
//     return Status::Ok();
//   });
//   std::span<const int32_t> ids = (*cache)->input_ids(0);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::data {

class TokenCacheWriter {
 public:
  virtual ~TokenCacheWriter() = default;
  virtual Status Add(std::span<const int32_t> input_ids, std::span<const int32_t> labels) = 0;
};

class TokenCache {
 public:
  using BuildFn = std::function<Status(TokenCacheWriter&)>;

  static StatusOr<std::shared_ptr<TokenCache>> Open(const std::string& cache_dir, const std::string& key);
  static StatusOr<std::shared_ptr<TokenCache>> OpenOrBuild(const std::string& cache_dir, const std::string& key,
                                                           const std::string& description, const BuildFn& build,
                                                           double wait_timeout_s = 1800);
  ~TokenCache();
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;

  int64_t size() const { return num_examples_; }
  int64_t num_tokens() const { return num_tokens_; }
  std::span<const int32_t> input_ids(int64_t i) const;
  std::span<const int32_t> labels(int64_t i) const;
  const std::string& path() const { return path_; }
  // True when this process built the cache (false: it was found or another process built it).
  bool built_here() const { return built_here_; }

 private:
  TokenCache() = default;
  std::string path_;
  int64_t num_examples_ = 0, num_tokens_ = 0;
  struct Mapping { void* addr = nullptr; size_t len = 0; };
  Mapping ids_, labels_, index_;
  bool built_here_ = false;
};

// 16 lowercase hex digits of FNV-1a 64 over the parts (each length-prefixed so boundaries count).
std::string CacheKey(const std::vector<std::string>& parts);

// FNV-1a 64 of a file's bytes, as 16 hex digits (data file checksums for the key).
StatusOr<std::string> FileChecksum(const std::string& path);

}  // namespace anneal::data
