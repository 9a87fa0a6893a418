#include "trainer/checkpoint/checkpoint.h"

#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/durable_dirs.h"
#include "common/fsutil.h"

namespace anneal::checkpoint {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

}  // namespace

StatusOr<std::string> Sha256File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + path);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

std::string TmpCheckpointDir(const std::string& output_dir, int64_t step) {
  return output_dir + "/.tmp-checkpoint-" + std::to_string(step);
}

StatusOr<CheckpointWriter> CheckpointWriter::Begin(const std::string& output_dir, int64_t step) {
  CheckpointWriter w;
  w.output_dir_ = output_dir;
  w.step_ = step;
  w.tmp_dir_ = TmpCheckpointDir(output_dir, step);
  std::error_code ec;
  fs::remove_all(w.tmp_dir_, ec);
  RETURN_IF_ERROR(MakeDirs(w.tmp_dir_));
  return w;
}

StatusOr<std::string> CheckpointWriter::Commit(const json& metadata, std::vector<FileEntry>* files_out) {
  std::vector<FileEntry> files;
  for (const auto& entry : fs::recursive_directory_iterator(tmp_dir_)) {
    if (!entry.is_regular_file()) continue;
    FileEntry f;
    f.path = fs::relative(entry.path(), tmp_dir_).string();
    f.size = entry.file_size();
    ASSIGN_OR_RETURN(f.sha256, Sha256File(entry.path().string()));
    RETURN_IF_ERROR(FsyncPath(entry.path().string()));
    files.push_back(std::move(f));
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  json m = {{"format", "anneal-checkpoint-1"}, {"step", step_}, {"metadata", metadata}, {"files", json::array()}};
  for (const auto& f : files) m["files"].push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}});
  RETURN_IF_ERROR(WriteFileAtomic(tmp_dir_ + "/manifest.json", m.dump(2) + "\n"));
  const std::string final_dir = CheckpointDir(output_dir_, step_);
  // A re-run step after a resume replaces its older commit atomically: never neither on disk.
  RETURN_IF_ERROR(ReplaceDirectory(tmp_dir_, final_dir));
  if (files_out) *files_out = files;
  return final_dir;
}

StatusOr<Manifest> ReadManifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  auto text = ReadFile(path);
  if (!text.ok()) return DataLossError(dir + ": no manifest.json (an uncommitted or truncated checkpoint)");
  json m = json::parse(*text, nullptr, false);
  if (m.is_discarded() || !m.contains("files") || !m.contains("step")) {
    return DataLossError(path + ": corrupt manifest");
  }
  Manifest out;
  out.step = m["step"].get<int64_t>();
  out.metadata = m.value("metadata", json::object());
  for (const auto& f : m["files"]) {
    out.files.push_back({f["path"].get<std::string>(), f["size"].get<uint64_t>(), f["sha256"].get<std::string>()});
  }
  return out;
}

StatusOr<Manifest> VerifyCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(Manifest out, ReadManifest(dir));
  for (const FileEntry& e : out.files) {
    const std::string file = dir + "/" + e.path;
    std::error_code ec;
    const uint64_t size = fs::file_size(file, ec);
    if (ec) return DataLossError(dir + ": file " + e.path + " listed in the manifest is missing");
    if (size != e.size) {
      return DataLossError(dir + ": file " + e.path + " has " + std::to_string(size) + " bytes, the manifest says " +
                           std::to_string(e.size) + " (truncated or overwritten)");
    }
    ASSIGN_OR_RETURN(std::string sha, Sha256File(file));
    if (sha != e.sha256) return DataLossError(dir + ": file " + e.path + " fails its sha256 checksum (corrupt)");
  }
  return out;
}

std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
    try {
      size_t used = 0;
      const int64_t step = std::stoll(name.substr(11), &used);
      if (used != name.size() - 11) continue;
      if (fs::exists(entry.path() / "manifest.json")) out.emplace_back(step, entry.path().string());
    } catch (const std::exception&) {
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<std::string> ResolveCheckpoint(const std::string& output_dir, const std::string& spec) {
  if (spec != "latest") {
    if (!fs::is_directory(spec)) return NotFoundError("resume_from_checkpoint: no such directory " + spec);
    return spec;
  }
  auto all = ListCheckpoints(output_dir);
  if (all.empty()) return NotFoundError("resume_from_checkpoint: latest: no checkpoint in " + output_dir);
  return all.back().second;
}

std::optional<std::string> PreviousCheckpoint(const std::string& output_dir, const std::string& dir) {
  std::optional<std::string> prev;
  for (const auto& [step, path] : ListCheckpoints(output_dir)) {
    if (fs::equivalent(path, dir)) break;
    prev = path;
  }
  return prev;
}

StatusOr<std::vector<int64_t>> ApplyRetention(const std::string& output_dir, const jobspec::RetentionPolicy& policy) {
  std::vector<jobspec::ScoredCheckpoint> committed;
  for (const auto& [step, dir] : ListCheckpoints(output_dir)) {
    jobspec::ScoredCheckpoint c{step, {}};
    // The metrics the commit recorded (metadata.metrics); an unreadable manifest scores nothing.
    if (auto m = ReadManifest(dir); m.ok() && m->metadata.contains("metrics")) {
      for (const auto& [name, value] : m->metadata["metrics"].items()) {
        if (value.is_number()) c.metrics[name] = value.get<double>();
      }
    }
    committed.push_back(std::move(c));
  }
  const std::vector<int64_t> doomed = jobspec::StepsToDelete(policy, committed);
  for (int64_t step : doomed) RETURN_IF_ERROR(DeleteDirectoryMarked(CheckpointDir(output_dir, step)));
  return doomed;
}

std::string CheckpointDir(const std::string& output_dir, int64_t step) {
  return output_dir + "/checkpoint-" + std::to_string(step);
}

}  // namespace anneal::checkpoint
