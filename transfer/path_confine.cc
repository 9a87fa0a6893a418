#include "transfer/path_confine.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>

#include "common/fsutil.h"
#include "transfer/manifest.h"

namespace anneal::transfer {
namespace {

std::optional<std::string> RealPath(const std::string& path, int* err) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) {
    *err = errno;
    return std::nullopt;
  }
  return std::string(buf);
}

bool Inside(const std::string& path, const std::string& root) {
  if (path == root) return true;
  if (root == "/") return true;
  return path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/';
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

StatusOr<std::string> ConfinePath(const std::string& root, const std::string& rel, bool allow_root) {
  int err = 0;
  const auto resolved_root = RealPath(root, &err);
  if (!resolved_root && err == EACCES) {
    return PermissionDeniedError(fmt::format("the ticket's root {} is not readable here: {}", root, ErrnoText(err)));
  }
  if (!resolved_root) {
    return NotFoundError(fmt::format("the ticket's root {} cannot be resolved on this node: {}", root, ErrnoText(err)));
  }
  if (rel.empty()) {
    if (allow_root) return *resolved_root;
    return InvalidArgumentError("empty path: a read names a file under the ticket's root");
  }
  if (Status st = CheckRelativePath(rel); !st.ok()) {
    return PermissionDeniedError(
        fmt::format("path refused: {} (only paths inside the ticket's root are served)", st.message()));
  }
  const auto resolved = RealPath(*resolved_root + "/" + rel, &err);
  if (resolved) {
    if (!Inside(*resolved, *resolved_root)) {
      return PermissionDeniedError(fmt::format(
          "path '{}' refused: it resolves outside the ticket's root (to {}, through a symlink)", rel, *resolved));
    }
    return *resolved;
  }
  if (err == ENOTDIR) {
    // <file>/<its own name>: the one entry of a single-file manifest.
    const size_t slash = rel.rfind('/');
    const std::string parent_given = slash == std::string::npos ? root : root + "/" + rel.substr(0, slash);
    const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
    int perr = 0;
    const auto parent = RealPath(parent_given, &perr);
    struct stat st {};
    if (parent && Inside(*parent, *resolved_root) && ::stat(parent->c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        BaseName(parent_given) == name) {
      return *parent;
    }
  }
  if (err == ENOENT || err == ENOTDIR) {
    return NotFoundError(fmt::format("no file '{}' under the ticket's root", rel));
  }
  return UnavailableError(fmt::format("cannot resolve '{}': {}", rel, ErrnoText(err)));
}

}  // namespace anneal::transfer
