// BlobStore (transfer/client.h): checking blobs again before they are used, and Verify (every blob hashed again).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "common/fsutil.h"
#include "transfer/client.h"
#include "transfer/store_lock.h"

namespace anneal::transfer {
namespace fs = std::filesystem;

StatusOr<bool> BlobStore::CheckBlob(const FileEntry& entry) const {
  const std::string blob = BlobPath(entry.sha256);
  struct stat st {};
  if (::stat(blob.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return UnavailableError(fmt::format("cannot stat {}: {}", blob, ErrnoText(errno)));
  }
  std::string found;
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != entry.size) {
    found = fmt::format("size {}", st.st_size);
  } else {
    ASSIGN_OR_RETURN(std::string sha, verified_->Sha256(blob));
    if (sha == entry.sha256) return true;
    found = "sha256 " + sha;
  }
  spdlog::warn("blob store {}: the blob of '{}' changed since it was checked (expected size {}, found {}): removed",
               root_, entry.path, entry.size, found);
  if (::unlink(blob.c_str()) != 0 && errno != ENOENT) {
    return UnavailableError(fmt::format("cannot remove the changed blob {}: {}", blob, ErrnoText(errno)));
  }
  return false;
}

void BlobStore::RememberBlob(const std::string& sha256) const {
  if (Status st = verified_->Remember(BlobPath(sha256), sha256); !st.ok()) {
    spdlog::warn("blob store {}: {} (it will be hashed again before its next use)", root_, st.ToString());
  }
}

StatusOr<StoreVerifyReport> BlobStore::Verify() {
  ASSIGN_OR_RETURN(StoreLock lock, StoreLock::ExclusiveNoWait(root_));
  StoreVerifyReport report;
  std::error_code ec;
  for (fs::directory_iterator it(root_ + "/blobs/sha256", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string path = it->path().string();
    const std::string name = it->path().filename().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    ++report.blobs_checked;
    report.bytes_checked += static_cast<uint64_t>(st.st_size);
    if (sha == name) {
      RememberBlob(name);
      continue;
    }
    spdlog::warn("blob store {}: blob {} has sha256 {}: removed", root_, name, sha);
    if (::unlink(path.c_str()) != 0) {
      return UnavailableError(fmt::format("cannot remove the damaged blob {}: {}", path, ErrnoText(errno)));
    }
    report.removed.push_back(name);
  }
  if (ec) return UnavailableError(fmt::format("cannot list {}/blobs/sha256: {}", root_, ec.message()));
  RETURN_IF_ERROR(verified_->Flush());
  return report;
}

}  // namespace anneal::transfer
