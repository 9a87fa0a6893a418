// Checkpoints: checkpoint-N/ directories committed atomically with a manifest of every file's size and sha256.
//
// Commit protocol (CheckpointWriter): files are written under <output_dir>/.tmp-checkpoint-N/, fsync'd; then
// manifest.json (step, files with size and sha256, metadata) is written last; the directory is fsync'd and
// renamed to checkpoint-N (exchanged atomically with an existing checkpoint-N of a re-run step), and the parent
// fsync'd. A crash at any moment leaves a complete checkpoint-N (old or new) or, for a new step, none. VerifyCheckpoint
// recomputes every checksum; a mismatch is DATA_LOSS naming the file, and the caller can offer the previous checkpoint
// (PreviousCheckpoint).
//
// Thread-safety: a writer is used by one thread; several ranks may write different files into one writer's
// directory (the commit happens once, on one rank, after all files are written).
//
// Example:
//   ASSIGN_OR_RETURN(CheckpointWriter w, CheckpointWriter::Begin(out, 100));
//   RETURN_IF_ERROR(model::WriteSafetensors(w.dir() + "/optimizer.safetensors", tensors));
//   ASSIGN_OR_RETURN(std::string final_dir, w.Commit({{"consumed_samples", 800}}));
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "jobspec/retention.h"

namespace anneal::checkpoint {

struct FileEntry {
  std::string path;  // relative to the checkpoint directory
  uint64_t size = 0;
  std::string sha256;
};

class CheckpointWriter {
 public:
  // Creates (or empties) <output_dir>/.tmp-checkpoint-<step>/.
  static StatusOr<CheckpointWriter> Begin(const std::string& output_dir, int64_t step);
  const std::string& dir() const { return tmp_dir_; }
  // Checksums every file, writes manifest.json with `metadata`, fsyncs and renames. Returns the final path.
  StatusOr<std::string> Commit(const nlohmann::json& metadata, std::vector<FileEntry>* files = nullptr);

 private:
  std::string output_dir_, tmp_dir_;
  int64_t step_ = 0;
};

// <output_dir>/.tmp-checkpoint-<step>: where CheckpointWriter::Begin collects the files of step `step` (other
// ranks write their shards there between Begin and Commit).
std::string TmpCheckpointDir(const std::string& output_dir, int64_t step);

struct Manifest {
  int64_t step = 0;
  std::vector<FileEntry> files;
  nlohmann::json metadata;
};

StatusOr<std::string> Sha256File(const std::string& path);
// Reads manifest.json without checking the files (DATA_LOSS when it is missing or corrupt).
StatusOr<Manifest> ReadManifest(const std::string& dir);
// Reads manifest.json and checks every file's size and sha256.
StatusOr<Manifest> VerifyCheckpoint(const std::string& dir);
// checkpoint-N directories of output_dir (committed ones: with a manifest), ascending by N.
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& output_dir);
// "latest" -> the newest checkpoint that verifies, or a path as given. NOT_FOUND when there is none.
StatusOr<std::string> ResolveCheckpoint(const std::string& output_dir, const std::string& spec);
// The newest committed checkpoint older than `dir`, if any (offered when `dir` fails verification).
std::optional<std::string> PreviousCheckpoint(const std::string& output_dir, const std::string& dir);
// <output_dir>/checkpoint-<step>.
std::string CheckpointDir(const std::string& output_dir, int64_t step);
// Standalone retention (a trainer with no coordinator): deletes the committed checkpoints that
// jobspec::StepsToDelete names for `policy`, scored by the metrics in their manifests, each marked before removal
// (common/durable_dirs.h). Returns the deleted steps. Under an agent the coordinator owns retention and the
// trainer must not call this.
StatusOr<std::vector<int64_t>> ApplyRetention(const std::string& output_dir, const jobspec::RetentionPolicy& policy);

}  // namespace anneal::checkpoint
