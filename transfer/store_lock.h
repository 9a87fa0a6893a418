// Internal to anneal_transfer: the BlobStore's store-wide lock (<root>/.lock, flock). Fetch, AddLocal and
// Materialize hold it shared; Prune holds it exclusively (and does not wait: a store with a fetch in progress
// is not pruned), so Prune never removes a blob a fetch is about to link.
//
// Thread-safety: one StoreLock per holder; movable, released on destruction.
#pragma once

#include <string>

#include "common/status.h"

namespace anneal::transfer {

class StoreLock {
 public:
  static StatusOr<StoreLock> Shared(const std::string& root);
  // UNAVAILABLE when another holder (a fetch) has the store.
  static StatusOr<StoreLock> ExclusiveNoWait(const std::string& root);
  StoreLock(StoreLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  StoreLock& operator=(StoreLock&&) = delete;
  ~StoreLock();

 private:
  explicit StoreLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace anneal::transfer
