#include "common/durable_dirs.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)

#include <cerrno>
#include <filesystem>
#include <vector>

#include "common/fsutil.h"

namespace anneal {
namespace {

namespace fs = std::filesystem;

std::string StripSlashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string ParentOf(const std::string& path) {
  const std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

std::string Sibling(const std::string& path, const std::string& prefix) {
  const fs::path p(path);
  return (p.parent_path() / (prefix + p.filename().string())).string();
}

bool Exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(path, ec));
}

// Removes `path` and everything below it. Another process removing the same tree at the same time (an agent
// finishing a delete while a new attempt clears leftovers) makes remove_all fail on entries that vanished under
// it: that is retried, and a tree that is gone is success.
Status RemoveTree(const std::string& path) {
  std::error_code ec;
  for (int attempt = 0; attempt < 5; ++attempt) {
    fs::remove_all(path, ec);
    if (!ec || !Exists(path)) return Status::Ok();
  }
  return InternalError("cannot remove " + path + ": " + ec.message());
}

// Rename-aside fallback for filesystems without RENAME_EXCHANGE.
Status ReplaceBySteps(const std::string& staged, const std::string& target) {
  const std::string aside = Sibling(target, ".replaced-");
  RETURN_IF_ERROR(RemoveTree(aside));
  if (::rename(target.c_str(), aside.c_str()) != 0) {
    return InternalError("rename " + target + " -> " + aside + ": " + ErrnoText(errno));
  }
  if (::rename(staged.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::rename(aside.c_str(), target.c_str());  // put the old version back
    return InternalError("rename " + staged + " -> " + target + ": " + ErrnoText(err));
  }
  RETURN_IF_ERROR(FsyncPath(ParentOf(target)));
  return RemoveTree(aside);
}

}  // namespace

std::string DeletingMarkPath(const std::string& dir) {
  return Sibling(StripSlashes(dir), ".deleting-");
}

Status ReplaceDirectory(const std::string& staged_in, const std::string& target_in) {
  const std::string staged = StripSlashes(staged_in), target = StripSlashes(target_in);
  if (!Exists(target)) {
    if (::rename(staged.c_str(), target.c_str()) != 0) {
      return InternalError("rename " + staged + " -> " + target + ": " + ErrnoText(errno));
    }
    return FsyncPath(ParentOf(target));
  }
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
    const int err = errno;
    if (err == EINVAL || err == ENOSYS || err == ENOTSUP) return ReplaceBySteps(staged, target);
    return InternalError("exchange " + staged + " <-> " + target + ": " + ErrnoText(err));
  }
  RETURN_IF_ERROR(FsyncPath(ParentOf(target)));
  return RemoveTree(staged);  // now the old version
}

Status DeleteDirectoryMarked(const std::string& dir_in) {
  const std::string dir = StripSlashes(dir_in);
  const std::string mark = DeletingMarkPath(dir);
  if (Exists(dir)) {
    RETURN_IF_ERROR(RemoveTree(mark));  // a leftover of an earlier, interrupted delete
    if (::rename(dir.c_str(), mark.c_str()) != 0) {
      const int err = errno;
      if (err != ENOENT) return InternalError("cannot mark " + dir + " for deletion: " + ErrnoText(err));
      // Another deleter moved it first: theirs to finish, and ours is done.
    } else {
      RETURN_IF_ERROR(FsyncPath(ParentOf(dir)));
    }
  }
  return RemoveTree(mark);
}

Status CleanDirectoryLeftovers(const std::string& parent) {
  std::error_code ec;
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(parent, ec)) found.push_back(entry.path());
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return InternalError("cannot list " + parent + ": " + ec.message());
  }
  for (const fs::path& p : found) {
    const std::string name = p.filename().string();
    if (name.rfind(".deleting-", 0) == 0) {
      RETURN_IF_ERROR(RemoveTree(p.string()));
    } else if (name.rfind(".replaced-", 0) == 0) {
      const std::string original = (p.parent_path() / name.substr(10)).string();
      if (Exists(original)) {
        RETURN_IF_ERROR(RemoveTree(p.string()));
      } else if (::rename(p.c_str(), original.c_str()) != 0) {
        return InternalError("cannot restore " + p.string() + " to " + original + ": " + ErrnoText(errno));
      }
    }
  }
  return Status::Ok();
}

}  // namespace anneal
