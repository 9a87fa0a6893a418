// Dataset content hashes (coordinator/dataset_hash.h): sha256 over files in a stable order (libsodium).
#include "coordinator/dataset_hash.h"

#include <fmt/format.h>
#include <sodium.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

namespace anneal::coordinator {

namespace fs = std::filesystem;

namespace {

Status FileError(const std::string& path, const std::string& what) {
  const int err = errno;
  if (err == ENOENT) return NotFoundError(fmt::format("dataset file {}: {}: no such file", path, what));
  if (err == EACCES) return PermissionDeniedError(fmt::format("dataset file {}: {}: permission denied", path, what));
  return InvalidArgumentError(fmt::format("dataset file {}: {}: {}", path, what, std::strerror(err)));
}

struct FileToHash {
  std::string name;  // what the hash covers: the file's name, or its path relative to the named directory
  std::string path;  // where it is read
  bool operator<(const FileToHash& o) const { return std::tie(name, path) < std::tie(o.name, o.path); }
  bool operator==(const FileToHash& o) const { return name == o.name && path == o.path; }
};

// Every regular file `path` stands for (itself, or the files below a directory).
Status CollectFiles(const std::string& path, std::vector<FileToHash>* out) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return ec && ec != std::errc::no_such_file_or_directory
               ? PermissionDeniedError(fmt::format("dataset path {}: {}", path, ec.message()))
               : NotFoundError(fmt::format("dataset path {}: no such file or directory", path));
  }
  if (fs::is_regular_file(st)) {
    out->push_back({fs::path(path).filename().string(), fs::path(path).lexically_normal().string()});
    return Status::Ok();
  }
  if (!fs::is_directory(st)) {
    return InvalidArgumentError(fmt::format("dataset path {}: neither a regular file nor a directory", path));
  }
  for (fs::recursive_directory_iterator it(path, fs::directory_options::follow_directory_symlink, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) {
      out->push_back({it->path().lexically_relative(path).string(), it->path().lexically_normal().string()});
    }
  }
  if (ec) return PermissionDeniedError(fmt::format("dataset directory {}: cannot list it: {}", path, ec.message()));
  return Status::Ok();
}

Status HashFile(const FileToHash& file, crypto_hash_sha256_state* state) {
  const std::string& path = file.path;
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) return FileError(path, "cannot open it");
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  // Name and size first, each followed by NUL: ("ab","c") and ("a","bc") never hash alike.
  std::string header = file.name;
  header += '\0';
  header += std::to_string(size);
  header += '\0';
  crypto_hash_sha256_update(state, reinterpret_cast<const unsigned char*>(header.data()), header.size());
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    if (n > 0) crypto_hash_sha256_update(state, reinterpret_cast<const unsigned char*>(buffer.data()), size_t(n));
  }
  if (in.bad()) return FileError(path, "read error");
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> DatasetContentHash(const std::vector<std::string>& paths, uint64_t max_bytes) {
  if (paths.empty()) return InvalidArgumentError("dataset content hash: no dataset files named");
  if (sodium_init() < 0) return InternalError("libsodium could not be initialised");
  std::vector<FileToHash> files;
  for (const auto& p : paths) RETURN_IF_ERROR(CollectFiles(p, &files));
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  if (max_bytes != UINT64_MAX) {
    uint64_t total = 0;
    for (const auto& f : files) {
      std::error_code ec;
      const uintmax_t size = fs::file_size(f.path, ec);
      if (!ec) total += size;
    }
    if (total > max_bytes) {
      return ResourceExhaustedError(
          fmt::format("dataset content hash: {} files of {} bytes exceed the limit of {} "
                      "bytes to hash here",
                      files.size(), total, max_bytes));
    }
  }
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  for (const auto& f : files) RETURN_IF_ERROR(HashFile(f, &state));
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state, digest);
  char hex[2 * crypto_hash_sha256_BYTES + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return "sha256:" + std::string(hex);
}

StatusOr<std::vector<std::pair<std::string, std::string>>> DatasetFiles(const jobspec::DataSpec& data,
                                                                        const std::vector<std::string>& names) {
  YAML::Node info;
  const std::string info_path = data.dataset_dir + "/dataset_info.json";
  if (std::ifstream in(info_path, std::ios::binary); in) {
    std::ostringstream text;
    text << in.rdbuf();
    try {
      info = YAML::Load(text.str());  // JSON is YAML
    } catch (const YAML::Exception& e) {
      return InvalidArgumentError(fmt::format("{}: not valid JSON: {}", info_path, e.what()));
    }
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& name : names) {
    std::string path;
    if (name.find('/') != std::string::npos) {
      path = name[0] == '/' ? name : data.dataset_dir + "/" + name;
    } else if (info.IsMap() && info[name].IsMap() && info[name]["file_name"] && info[name]["file_name"].IsScalar()) {
      path = (fs::path(data.dataset_dir) / info[name]["file_name"].Scalar()).string();  // absolute file_name wins
    } else {
      path = data.dataset_dir + "/" + name;
    }
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      return NotFoundError(
          fmt::format("dataset '{}': resolves to {}, which does not exist (not in {} either)", name, path, info_path));
    }
    out.emplace_back(name, path);
  }
  return out;
}

StatusOr<std::vector<DatasetHash>> FingerprintDatasets(const jobspec::DataSpec& data,
                                                       const std::vector<std::string>& names, uint64_t max_bytes_each) {
  ASSIGN_OR_RETURN(auto files, DatasetFiles(data, names));
  std::vector<DatasetHash> out;
  for (const auto& [name, path] : files) {
    auto hash = DatasetContentHash({path}, max_bytes_each);
    if (!hash.ok()) return hash.status().WithContext(fmt::format("dataset '{}'", name));
    out.push_back({name, *hash});
  }
  return out;
}

std::string EvalSetFingerprint(std::vector<DatasetHash> datasets) {
  std::sort(datasets.begin(), datasets.end(),
            [](const DatasetHash& a, const DatasetHash& b) { return a.name < b.name; });
  std::string out;
  for (const auto& d : datasets) out += (out.empty() ? "" : ";") + d.name + "=" + d.content_hash;
  return out;
}

}  // namespace anneal::coordinator
