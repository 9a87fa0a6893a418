#include "transfer/manifest.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"

namespace anneal::transfer {
namespace fs = std::filesystem;
namespace {

constexpr size_t kHashBufferBytes = 1 << 20;

std::string Hex(const unsigned char* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 15];
  }
  return out;
}

bool IsLowerHex(std::string_view s, size_t length) {
  return s.size() == length &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += n;
  }
  return true;
}

// True when `path` (lexically normal, absolute) is `root` or lies under it.
bool IsInside(const fs::path& path, const fs::path& root) {
  auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  return r == root.end();
}

struct Walker {
  fs::path root;           // as given, absolute
  fs::path resolved_root;  // realpath
  HashCache* cache;
  Manifest manifest;
  // Symlinked directories can make loops or exponentially many paths: the directories on the current path
  // (a loop is refused) and a budget of directory visits (RESOURCE_EXHAUSTED).
  std::vector<std::pair<dev_t, ino_t>> open_dirs;
  size_t dirs_visited = 0;

  Status Hash(const fs::path& file, const std::string& rel) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) {
      return UnavailableError(fmt::format("cannot stat {}: {}", file.string(), ErrnoText(errno)));
    }
    std::string sha;
    if (cache != nullptr) {
      ASSIGN_OR_RETURN(sha, cache->Sha256(file.string()));
    } else {
      ASSIGN_OR_RETURN(sha, Sha256File(file.string()));
    }
    if (manifest.files.size() >= kMaxManifestFiles) {
      return ResourceExhaustedError(
          fmt::format("{} holds more than {} files (the most one manifest lists)", root.string(), kMaxManifestFiles));
    }
    manifest.files.push_back({rel, static_cast<uint64_t>(st.st_size), std::move(sha)});
    return Status::Ok();
  }

  // A symlink is followed only when its target resolves inside the root; returns the resolved target.
  StatusOr<fs::path> ResolveLink(const fs::path& link, const std::string& rel) {
    std::error_code ec;
    fs::path target = fs::canonical(link, ec);
    if (ec) {
      return PermissionDeniedError(
          fmt::format("{}: symlink {} does not resolve: {}", root.string(), rel, ec.message()));
    }
    if (!IsInside(target, resolved_root)) {
      return PermissionDeniedError(
          fmt::format("{}: symlink {} points outside the root (to {})", root.string(), rel, target.string()));
    }
    return target;
  }

  Status Walk(const fs::path& dir, const std::string& prefix, int depth) {
    if (depth > 64) return InvalidArgumentError(fmt::format("{}: directories nested deeper than 64", root.string()));
    if (++dirs_visited > kMaxManifestFiles) {
      return ResourceExhaustedError(
          fmt::format("{}: more than {} directories (through symlinks?)", root.string(), kMaxManifestFiles));
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      return UnavailableError(fmt::format("cannot stat {}: {}", dir.string(), ErrnoText(errno)));
    }
    const std::pair<dev_t, ino_t> id{st.st_dev, st.st_ino};
    if (std::find(open_dirs.begin(), open_dirs.end(), id) != open_dirs.end()) {
      return InvalidArgumentError(
          fmt::format("{}: '{}' is a symlink loop (a directory inside itself)", root.string(), prefix));
    }
    open_dirs.push_back(id);
    Status st_walk = WalkEntries(dir, prefix, depth);
    open_dirs.pop_back();
    return st_walk;
  }

  Status WalkEntries(const fs::path& dir, const std::string& prefix, int depth) {
    std::error_code ec;
    std::vector<fs::directory_entry> entries;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(*it);
    if (ec) return UnavailableError(fmt::format("cannot list {}: {}", dir.string(), ec.message()));
    for (const auto& entry : entries) {
      const std::string name = entry.path().filename().string();
      const std::string rel = prefix.empty() ? name : prefix + "/" + name;
      if (!IsValidUtf8(name)) {
        return InvalidArgumentError(fmt::format("{}: the name of {} is not valid UTF-8 (cannot be transferred)",
                                                root.string(), fs::path(dir / name).string()));
      }
      fs::path real = entry.path();
      fs::file_status status = entry.symlink_status(ec);
      if (ec) return UnavailableError(fmt::format("cannot stat {}: {}", real.string(), ec.message()));
      if (fs::is_symlink(status)) {
        ASSIGN_OR_RETURN(real, ResolveLink(entry.path(), rel));
        status = fs::status(real, ec);
        if (ec) return UnavailableError(fmt::format("cannot stat {}: {}", real.string(), ec.message()));
      }
      if (fs::is_directory(status)) {
        // A symlinked directory inside the root is walked at the link's path; the depth bound stops link loops.
        RETURN_IF_ERROR(Walk(real, rel, depth + 1));
      } else if (fs::is_regular_file(status)) {
        RETURN_IF_ERROR(Hash(real, rel));
      } else {
        return InvalidArgumentError(
            fmt::format("{}: {} is not a regular file or directory (a FIFO, socket or device is never transferred)",
                        root.string(), rel));
      }
    }
    return Status::Ok();
  }
};

}  // namespace

uint64_t Manifest::total_bytes() const {
  uint64_t total = 0;
  for (const auto& f : files) total += f.size;
  return total;
}

std::string Manifest::Id() const {
  std::string listing;
  for (const auto& f : files) listing += fmt::format("{} {} {}\n", f.sha256, f.size, f.path);
  return Sha256Hex(listing);
}

std::string Sha256Hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &n, EVP_sha256(), nullptr);
  return Hex(digest, n);
}

StatusOr<std::string> Sha256File(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFoundError(fmt::format("{}: no such file", path));
    if (err == EACCES) return PermissionDeniedError(fmt::format("{}: cannot be read: {}", path, ErrnoText(err)));
    return UnavailableError(fmt::format("cannot open {}: {}", path, ErrnoText(err)));
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buffer(kHashBufferBytes);
  while (true) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return UnavailableError(fmt::format("cannot read {}: {}", path, ErrnoText(err)));
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  return Hex(digest, len);
}

Status CheckRelativePath(std::string_view path) {
  if (path.empty()) return InvalidArgumentError("empty path");
  if (path.find('\0') != std::string_view::npos) return InvalidArgumentError("path contains a NUL byte");
  if (!IsValidUtf8(path)) return InvalidArgumentError(fmt::format("path '{}' is not valid UTF-8", path));
  if (path.front() == '/') return InvalidArgumentError(fmt::format("path '{}' is absolute", path));
  size_t start = 0;
  while (start <= path.size()) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part.empty()) return InvalidArgumentError(fmt::format("path '{}' has an empty part", path));
    if (part == "." || part == "..") {
      return InvalidArgumentError(fmt::format("path '{}' has a '{}' part", path, part));
    }
    start = end + 1;
  }
  return Status::Ok();
}

StatusOr<Manifest> BuildManifest(const std::string& root, HashCache* cache) {
  std::error_code ec;
  const fs::path abs = fs::absolute(root, ec).lexically_normal();
  const fs::file_status status = fs::symlink_status(abs, ec);
  if (ec || !fs::exists(status)) return NotFoundError(fmt::format("{}: no such file or directory", root));
  Walker walker{abs, fs::canonical(abs, ec), cache, {}, {}, 0};
  if (ec) return NotFoundError(fmt::format("{}: cannot be resolved: {}", root, ec.message()));
  const fs::file_status target = fs::status(abs, ec);
  if (fs::is_regular_file(target)) {
    RETURN_IF_ERROR(walker.Hash(walker.resolved_root, abs.filename().string()));
  } else if (fs::is_directory(target)) {
    RETURN_IF_ERROR(walker.Walk(walker.resolved_root, "", 0));
  } else {
    return InvalidArgumentError(fmt::format("{} is not a regular file or directory", root));
  }
  std::sort(walker.manifest.files.begin(), walker.manifest.files.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  if (cache != nullptr) cache->Flush().IgnoreError();  // best effort: a cache that cannot be saved only costs time
  return std::move(walker.manifest);
}

Status ValidateManifest(const Manifest& manifest) {
  if (manifest.files.size() > kMaxManifestFiles) {
    return InvalidArgumentError(
        fmt::format("manifest: {} files, more than the {} allowed", manifest.files.size(), kMaxManifestFiles));
  }
  for (size_t i = 0; i < manifest.files.size(); ++i) {
    const FileEntry& e = manifest.files[i];
    if (Status st = CheckRelativePath(e.path); !st.ok()) return st.WithContext(fmt::format("manifest: files[{}]", i));
    if (!IsLowerHex(e.sha256, 64)) {
      return InvalidArgumentError(
          fmt::format("manifest: files[{}] ({}): sha256 is not 64 lowercase hex digits", i, e.path));
    }
    if (i > 0 && !(manifest.files[i - 1].path < e.path)) {
      return InvalidArgumentError(fmt::format("manifest: files[{}] ({}) is not after '{}' (unsorted or duplicate)", i,
                                              e.path, manifest.files[i - 1].path));
    }
  }
  return Status::Ok();
}

std::string ManifestToJson(const Manifest& manifest) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : manifest.files) files.push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}});
  // Paths from BuildManifest are valid UTF-8; any other byte would throw, so it is replaced (and then refused).
  return nlohmann::json{{"files", std::move(files)}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StatusOr<Manifest> ManifestFromJson(std::string_view json) {
  const nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("files") || !doc["files"].is_array()) {
    return InvalidArgumentError("manifest: not a JSON object with a \"files\" array");
  }
  const auto& files = doc["files"];
  if (files.size() > kMaxManifestFiles) {
    return InvalidArgumentError(
        fmt::format("manifest: {} files, more than the {} allowed", files.size(), kMaxManifestFiles));
  }
  Manifest out;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& f = files[i];
    if (!f.is_object() || !f.contains("path") || !f["path"].is_string() || !f.contains("size") ||
        !f["size"].is_number_unsigned() || !f.contains("sha256") || !f["sha256"].is_string()) {
      return InvalidArgumentError(
          fmt::format("manifest: files[{}] needs a string path, unsigned size, string sha256", i));
    }
    out.files.push_back({f["path"].get<std::string>(), f["size"].get<uint64_t>(), f["sha256"].get<std::string>()});
  }
  if (Status st = ValidateManifest(out); !st.ok()) return st;
  return out;
}

}  // namespace anneal::transfer
