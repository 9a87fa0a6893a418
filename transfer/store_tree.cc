// BlobStore (transfer/client.h): materializing trees, adding local files, accounting and pruning.
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <vector>

#include "common/durable_dirs.h"
#include "common/fsutil.h"
#include "transfer/client.h"
#include "transfer/store_lock.h"

namespace anneal::transfer {
namespace fs = std::filesystem;
namespace {

std::atomic<uint64_t> g_tree_counter{0};

StatusOr<int> Lock(const std::string& root, int how) {
  const std::string path = root + "/.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return UnavailableError(fmt::format("cannot open {}: {}", path, ErrnoText(errno)));
  while (::flock(fd, how) != 0) {
    if (errno == EINTR) continue;
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return UnavailableError(fmt::format("blob store {} is in use by a fetch", root));
    return UnavailableError(fmt::format("cannot lock {}: {}", path, ErrnoText(err)));
  }
  return fd;
}

Status CopyWithMode(const std::string& from, const std::string& to, mode_t mode) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return UnavailableError(fmt::format("cannot copy {} to {}: {}", from, to, ec.message()));
  if (::chmod(to.c_str(), mode) != 0) return UnavailableError(fmt::format("cannot chmod {}: {}", to, ErrnoText(errno)));
  return Status::Ok();
}

// dest_dir holds exactly the manifest's files: same paths (and no others), sizes, and content (the blob's own
// inode, or a copy whose SHA-256 matches).
bool TreeMatches(const BlobStore& store, const Manifest& manifest, const std::string& dest) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dest, ec))) return false;
  size_t files = 0;
  for (fs::recursive_directory_iterator it(dest, ec), end; !ec && it != end; it.increment(ec)) {
    const auto status = it->symlink_status(ec);
    if (fs::is_regular_file(status)) {
      ++files;
    } else if (!fs::is_directory(status)) {
      return false;
    }
  }
  if (ec || files != manifest.files.size()) return false;
  for (const FileEntry& e : manifest.files) {
    const std::string path = dest + "/" + e.path;
    struct stat have {
    }, blob{};
    if (::lstat(path.c_str(), &have) != 0 || !S_ISREG(have.st_mode) || static_cast<uint64_t>(have.st_size) != e.size) {
      return false;
    }
    if (::stat(store.BlobPath(e.sha256).c_str(), &blob) == 0 && blob.st_ino == have.st_ino &&
        blob.st_dev == have.st_dev) {
      continue;
    }
    auto sha = Sha256File(path);
    if (!sha.ok() || *sha != e.sha256) return false;
  }
  return true;
}

Status BuildTree(const BlobStore& store, const Manifest& manifest, const std::string& dir, bool copies) {
  for (const FileEntry& e : manifest.files) {
    const std::string target = dir + "/" + e.path;
    RETURN_IF_ERROR(MakeDirs(fs::path(target).parent_path().string()));
    const std::string blob = store.BlobPath(e.sha256);
    if (copies) {
      RETURN_IF_ERROR(CopyWithMode(blob, target, 0644));  // the caller's own, writable
      continue;
    }
    if (::link(blob.c_str(), target.c_str()) == 0) continue;
    const int err = errno;
    if (err != EXDEV && err != EMLINK && err != EPERM) {
      return UnavailableError(fmt::format("cannot link {} to {}: {}", blob, target, ErrnoText(err)));
    }
    RETURN_IF_ERROR(CopyWithMode(blob, target, 0444));  // another filesystem (or too many links): a copy
  }
  return FsyncPath(dir);
}

}  // namespace

StatusOr<StoreLock> StoreLock::Shared(const std::string& root) {
  ASSIGN_OR_RETURN(int fd, Lock(root, LOCK_SH));
  return StoreLock(fd);
}
StatusOr<StoreLock> StoreLock::ExclusiveNoWait(const std::string& root) {
  ASSIGN_OR_RETURN(int fd, Lock(root, LOCK_EX | LOCK_NB));
  return StoreLock(fd);
}
StoreLock::~StoreLock() {
  if (fd_ >= 0) ::close(fd_);
}

Status MaterializeTree(const BlobStore& store, const Manifest& manifest, const std::string& dest, bool copies) {
  for (const FileEntry& e : manifest.files) {
    if (!store.Has(e.sha256)) {
      return NotFoundError(fmt::format("blob store {} has no blob {} for '{}'", store.root(), e.sha256, e.path));
    }
  }
  if (TreeMatches(store, manifest, dest)) {
    ::utimensat(AT_FDCWD, dest.c_str(), nullptr, 0);  // recently used (Prune's order)
    return Status::Ok();
  }
  const std::string staged = fmt::format("{}.partial-{}-{}", dest, ::getpid(), g_tree_counter.fetch_add(1));
  std::error_code ec;
  fs::remove_all(staged, ec);
  RETURN_IF_ERROR(MakeDirs(staged));
  if (Status st = BuildTree(store, manifest, staged, copies); !st.ok()) {
    fs::remove_all(staged, ec);
    return st;
  }
  RETURN_IF_ERROR(MakeDirs(fs::path(dest).parent_path().string()));
  if (::rename(staged.c_str(), dest.c_str()) == 0) {
    return FsyncPath(fs::path(dest).parent_path().string());
  }
  if (errno != EEXIST && errno != ENOTEMPTY && errno != ENOTDIR && errno != EISDIR) {
    const int err = errno;
    fs::remove_all(staged, ec);
    return UnavailableError(fmt::format("cannot rename {} to {}: {}", staged, dest, ErrnoText(err)));
  }
  if (TreeMatches(store, manifest, dest)) {  // a concurrent fetch of the same tree got there first
    fs::remove_all(staged, ec);
    return Status::Ok();
  }
  if (!fs::is_directory(fs::symlink_status(dest, ec))) {
    fs::remove_all(staged, ec);
    return FailedPreconditionError(fmt::format("{} exists and is not a directory: not replaced", dest));
  }
  return ReplaceDirectory(staged, dest);
}

Status BlobStore::Materialize(const Manifest& manifest, const std::string& dest_dir, bool copies) {
  RETURN_IF_ERROR(ValidateManifest(manifest));
  ASSIGN_OR_RETURN(StoreLock lock, StoreLock::Shared(root_));
  for (const FileEntry& e : manifest.files) {
    ASSIGN_OR_RETURN(bool intact, CheckBlob(e));
    if (!intact)
      return NotFoundError(fmt::format("blob store {} has no intact blob {} for '{}'", root_, e.sha256, e.path));
  }
  return MaterializeTree(*this, manifest, dest_dir, copies);
}

Status BlobStore::AddLocal(const std::string& root, const Manifest& manifest) {
  RETURN_IF_ERROR(ValidateManifest(manifest));
  ASSIGN_OR_RETURN(StoreLock lock, StoreLock::Shared(root_));
  std::error_code ec;
  const bool single_file = fs::is_regular_file(root, ec);
  for (const FileEntry& e : manifest.files) {
    ASSIGN_OR_RETURN(bool intact, CheckBlob(e));
    if (intact) continue;
    const std::string source = single_file ? root : root + "/" + e.path;
    const std::string staged =
        fmt::format("{}/partial/{}.local-{}-{}", root_, e.sha256, ::getpid(), g_tree_counter.fetch_add(1));
    RETURN_IF_ERROR(CopyWithMode(source, staged, 0444));
    auto sha = Sha256File(staged);
    const auto size = fs::file_size(staged, ec);
    if (!sha.ok() || ec || *sha != e.sha256 || size != e.size) {
      fs::remove(staged, ec);
      RETURN_IF_ERROR(sha.status());
      return DataLossError(
          fmt::format("{}: expected sha256 {} size {}, the file has sha256 {} size {} (changed since "
                      "its manifest was built?)",
                      source, e.sha256, e.size, *sha, size));
    }
    if (::rename(staged.c_str(), BlobPath(e.sha256).c_str()) != 0) {
      const int err = errno;
      fs::remove(staged, ec);
      return UnavailableError(fmt::format("cannot move {} into the store: {}", staged, ErrnoText(err)));
    }
    RememberBlob(e.sha256);
  }
  if (Status st = verified_->Flush(); !st.ok()) spdlog::warn("blob store {}: {}", root_, st.ToString());
  return FsyncPath(root_ + "/blobs/sha256");
}

uint64_t BlobStore::UsedBytes() const {
  uint64_t used = 0;
  std::error_code ec;
  for (const char* dir : {"/blobs/sha256", "/partial"}) {
    for (fs::directory_iterator it(root_ + dir, ec), end; !ec && it != end; it.increment(ec)) {
      struct stat st {};
      if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) used += static_cast<uint64_t>(st.st_size);
    }
  }
  for (fs::recursive_directory_iterator it(root_ + "/trees", ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) {
      used += static_cast<uint64_t>(st.st_size);  // a copy (another filesystem), not a link to a blob
    }
  }
  return used;
}

namespace {

struct Aged {
  fs::path path;
  int64_t mtime_ns = 0;
  uint64_t bytes = 0;
};

std::vector<Aged> ListOldestFirst(const std::string& dir, bool only_unlinked_files) {
  std::vector<Aged> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    if (only_unlinked_files && (!S_ISREG(st.st_mode) || st.st_nlink != 1)) continue;
    out.push_back(
        {it->path(), st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec, static_cast<uint64_t>(st.st_size)});
  }
  std::sort(out.begin(), out.end(), [](const Aged& a, const Aged& b) { return a.mtime_ns < b.mtime_ns; });
  return out;
}

}  // namespace

Status BlobStore::Prune(uint64_t max_bytes, const std::set<std::string>& pinned_manifest_ids) {
  ASSIGN_OR_RETURN(StoreLock lock, StoreLock::ExclusiveNoWait(root_));
  if (UsedBytes() <= max_bytes) return Status::Ok();
  std::error_code ec;
  // No fetch holds the store: every .part and staged tree is a leftover.
  for (const Aged& part : ListOldestFirst(root_ + "/partial", false)) fs::remove_all(part.path, ec);
  CleanDirectoryLeftovers(root_ + "/trees").IgnoreError();
  auto drop_unreferenced_blobs = [&] {
    uint64_t used = UsedBytes();
    for (const Aged& blob : ListOldestFirst(root_ + "/blobs/sha256", /*only_unlinked_files=*/true)) {
      if (used <= max_bytes) break;
      if (fs::remove(blob.path, ec)) used -= std::min(used, blob.bytes);
    }
    return used;
  };
  uint64_t used = drop_unreferenced_blobs();
  for (const Aged& tree : ListOldestFirst(root_ + "/trees", false)) {
    const std::string name = tree.path.filename().string();
    if (used <= max_bytes) break;
    if (pinned_manifest_ids.count(name) != 0) continue;
    if (name.find(".partial-") != std::string::npos) {
      fs::remove_all(tree.path, ec);
    } else {
      RETURN_IF_ERROR(DeleteDirectoryMarked(tree.path.string()));
      spdlog::info("blob store {}: pruned tree {}", root_, name);
    }
    used = drop_unreferenced_blobs();
  }
  if (used > max_bytes) {
    return ResourceExhaustedError(fmt::format(
        "blob store {} holds {} bytes after pruning, more than the {} allowed: the {} pinned trees and files linked "
        "from outside the store need that much",
        root_, used, max_bytes, pinned_manifest_ids.size()));
  }
  return Status::Ok();
}

}  // namespace anneal::transfer
