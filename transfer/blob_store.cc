// BlobStore (transfer/client.h): fetching blobs into the store, resumably and checked, and materializing trees.
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <thread>

#include "common/durable_dirs.h"
#include "common/fsutil.h"
#include "transfer/channel.h"
#include "transfer/client.h"
#include "transfer/store_lock.h"

namespace anneal::transfer {
namespace fs = std::filesystem;

Status MaterializeTree(const BlobStore& store, const Manifest& manifest, const std::string& dest,
                       bool copies);  // store_tree.cc

namespace {

std::string JoinPath(const std::string& subpath, const std::string& path) {
  return subpath.empty() ? path : subpath + "/" + path;
}

// Opens <part> and takes its exclusive flock, waiting (and checking `cancel`) while another fetch holds it. The
// fd is re-opened when the file it locked was unlinked meanwhile (the holder gave up on a corrupt copy).
StatusOr<int> OpenLockedPart(const std::string& part, const std::atomic<bool>* cancel) {
  while (true) {
    const int fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return UnavailableError(fmt::format("cannot open {}: {}", part, ErrnoText(errno)));
    while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        const int err = errno;
        ::close(fd);
        return UnavailableError(fmt::format("cannot lock {}: {}", part, ErrnoText(err)));
      }
      if (cancel != nullptr && cancel->load()) {
        ::close(fd);
        return CancelledError(fmt::format("waiting for another fetch of {} cancelled", part));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    struct stat locked {
    }, current{};
    if (::fstat(fd, &locked) == 0 && ::stat(part.c_str(), &current) == 0 && locked.st_ino == current.st_ino) {
      return fd;
    }
    ::close(fd);  // the file we locked is gone or replaced: lock the one now at the path
  }
}

StatusOr<uint64_t> FileSize(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return UnavailableError(fmt::format("cannot stat {}: {}", path, ErrnoText(errno)));
  return static_cast<uint64_t>(st.st_size);
}

struct BlobFetch {
  const BlobStore& store;
  Channel& channel;
  const FetchOptions& options;
  const FileEntry& entry;
  std::function<void(uint64_t)> on_bytes;  // bytes written to the .part (progress)

  // One pass: resume (or start, when from_scratch) the .part, then check it. Returns the SHA-256 it found when
  // the copy is complete but wrong (the .part is then removed), "" when it became the blob.
  StatusOr<std::string> Attempt(bool from_scratch) {
    const std::string part = store.root() + "/partial/" + entry.sha256 + ".part";
    ASSIGN_OR_RETURN(int fd, OpenLockedPart(part, options.cancel));
    auto close_fd = [fd] { ::close(fd); };
    if (store.Has(entry.sha256)) {  // another fetch finished it while we waited for the lock
      ::unlink(part.c_str());
      close_fd();
      return std::string();
    }
    StatusOr<uint64_t> have = FileSize(fd, part);
    if (!have.ok()) {
      close_fd();
      return have.status();
    }
    uint64_t from = *have;
    if (from_scratch || from > entry.size) {
      if (::ftruncate(fd, 0) != 0) {
        close_fd();
        return UnavailableError(fmt::format("cannot truncate {}: {}", part, ErrnoText(errno)));
      }
      from = 0;
    }
    if (from > 0) {
      spdlog::info("transfer: resuming '{}' from {} at byte {} of {} (its .part, kept from an earlier fetch)",
                   entry.path, channel.endpoint(), from, entry.size);
      if (options.stats != nullptr) {
        options.stats->resumed_bytes += from;
        ++options.stats->resumed_files;
      }
      on_bytes(from);
    }
    Status st = channel.ReadRange(
        JoinPath(options.subpath, entry.path), from, entry.size, [&](uint64_t offset, std::string_view bytes) {
          if (::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) !=
              static_cast<ssize_t>(bytes.size())) {
            return UnavailableError(fmt::format("cannot write {}: {}", part, ErrnoText(errno)));
          }
          on_bytes(bytes.size());
          if (options.stats != nullptr) options.stats->bytes_received += bytes.size();
          return Status::Ok();
        });
    if (!st.ok() && st.code() != StatusCode::kDataLoss) {
      close_fd();  // the .part stays: the next fetch resumes from its length
      return st;
    }
    std::string got = st.ok() ? "" : st.message();
    if (st.ok()) {
      if (::fsync(fd) != 0) {
        close_fd();
        return UnavailableError(fmt::format("cannot fsync {}: {}", part, ErrnoText(errno)));
      }
      StatusOr<std::string> sha = Sha256File(part);
      if (!sha.ok()) {
        close_fd();
        return sha.status();
      }
      StatusOr<uint64_t> size = FileSize(fd, part);
      if (size.ok() && *size == entry.size && *sha == entry.sha256) {
        const std::string blob = store.BlobPath(entry.sha256);
        if (::fchmod(fd, 0444) != 0 || ::rename(part.c_str(), blob.c_str()) != 0) {
          const int err = errno;
          close_fd();
          return UnavailableError(fmt::format("cannot move {} to {}: {}", part, blob, ErrnoText(err)));
        }
        close_fd();
        FsyncPath(fs::path(blob).parent_path().string()).IgnoreError();
        store.RememberBlob(entry.sha256);
        return std::string();
      }
      got = fmt::format("sha256 {} size {}", *sha, size.ok() ? *size : 0);
    }
    ::unlink(part.c_str());  // never resume from a wrong copy
    close_fd();
    return got;
  }

  Status Run() {
    std::string first_failure;
    for (int attempt = 0; attempt < 2; ++attempt) {
      ASSIGN_OR_RETURN(std::string wrong, Attempt(/*from_scratch=*/attempt > 0));
      if (wrong.empty()) return Status::Ok();
      if (attempt == 0) {
        if (options.stats != nullptr) ++options.stats->refetched_files;
        spdlog::warn("transfer: '{}' from {} did not match its sha256 ({}): fetching it again from scratch", entry.path,
                     channel.endpoint(), wrong);
      }
      first_failure = wrong;
    }
    return DataLossError(fmt::format(
        "'{}' from {}: expected sha256 {} size {}, got {} (also after a refetch from scratch); nothing was kept",
        entry.path, channel.endpoint(), entry.sha256, entry.size, first_failure));
  }
};

}  // namespace

BlobStore::BlobStore(std::string root) : root_(std::move(root)) {
  for (const char* dir : {"/blobs/sha256", "/partial", "/trees"}) {
    if (Status st = MakeDirs(root_ + dir); !st.ok()) spdlog::warn("blob store: {}", st.ToString());
  }
  verified_ = std::make_shared<HashCache>(root_ + "/verified.json");
}

std::string BlobStore::BlobPath(const std::string& sha256) const {
  return root_ + "/blobs/sha256/" + sha256;
}

bool BlobStore::Has(const std::string& sha256) const {
  struct stat st {};
  return ::stat(BlobPath(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string BlobStore::TreePath(const std::string& manifest_id) const {
  return root_ + "/trees/" + manifest_id;
}

Status BlobStore::Fetch(const Source& source, const Manifest& manifest, const std::string& dest_dir,
                        const FetchOptions& options) {
  RETURN_IF_ERROR(ValidateManifest(manifest));
  ASSIGN_OR_RETURN(StoreLock lock, StoreLock::Shared(root_));
  Channel channel(source, options);
  const uint64_t total = manifest.total_bytes();
  uint64_t done = 0;
  auto on_bytes = [&](uint64_t n) {
    done += n;
    if (options.progress) options.progress(std::min(done, total), total);
  };
  std::set<std::string> fetched;  // one fetch per distinct content
  for (const FileEntry& entry : manifest.files) {
    if (options.cancel != nullptr && options.cancel->load()) {
      return CancelledError(fmt::format("transfer from {} cancelled", source.endpoint));
    }
    if (!fetched.insert(entry.sha256).second) {  // the same content earlier in this manifest
      on_bytes(entry.size);
      continue;
    }
    const bool had = Has(entry.sha256);
    ASSIGN_OR_RETURN(bool intact, CheckBlob(entry));
    if (intact) {
      on_bytes(entry.size);
      continue;
    }
    if (had && options.stats != nullptr) ++options.stats->replaced_blobs;
    BlobFetch fetch{*this, channel, options, entry, on_bytes};
    RETURN_IF_ERROR(fetch.Run());
  }
  if (Status st = verified_->Flush(); !st.ok()) spdlog::warn("blob store {}: {}", root_, st.ToString());
  return MaterializeTree(*this, manifest, dest_dir, options.materialize_copies);
}

}  // namespace anneal::transfer
