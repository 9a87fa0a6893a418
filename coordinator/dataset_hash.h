// Dataset content hashes: one sha256 over a dataset's files, the fingerprint of an eval set, and which files a
// spec's dataset names resolve to. Used by the model registry (a version's training data, the eval set its
// metrics belong to) and by data-change triggers of schedules (a schedule fires when the hash changes).
//
// DatasetContentHash(paths): "sha256:<64 hex>" over the files, in a stable order: a file path stands for
// itself (named by its file name), a directory for every regular file below it, recursively, symlinks followed
// (each named by its path relative to that directory). The files are sorted by name and each contributes its
// name, its size and its bytes, so a renamed, resized or edited file changes the hash, while the order the
// paths are given in and where the dataset lies (a moved copy) do not. Errors name the file: NOT_FOUND
// (missing), PERMISSION_DENIED (unreadable), INVALID_ARGUMENT (no paths; neither a file nor a directory).
//
// DatasetFiles(data, names): where the trainer will read each name (as jobspec/path_policy.h resolves them): an
// entry with a '/' is a path (relative ones under data.dataset_dir); a name is the file_name of its entry in
// <dataset_dir>/dataset_info.json, else the file <dataset_dir>/<name>. NOT_FOUND names the dataset that
// resolves to nothing readable.
//
// FingerprintDatasets: each name with the hash of its files. EvalSetFingerprint: "name=sha256:..;name2=..."
// (sorted by name): equal strings mean the same data, so metrics on equal fingerprints are comparable.
//
// Cost: reads every byte (sha256 ~ 1 GB/s); callers on the coordinator's loop hash small eval sets only, or
// run it on a worker thread. Thread-safety: pure functions over the filesystem; safe from any thread.
//
// Example:
//   ASSIGN_OR_RETURN(std::string h, DatasetContentHash({"/data/nlp/held_out.jsonl"}));   // "sha256:9f86..."
//   ASSIGN_OR_RETURN(auto fps, FingerprintDatasets(spec.data, spec.data.eval_dataset));
//   std::string eval_set = EvalSetFingerprint(fps);                 // "held_out=sha256:9f86..."
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"

namespace anneal::coordinator {

// max_bytes: RESOURCE_EXHAUSTED (naming the total) before reading anything when the files are larger.
StatusOr<std::string> DatasetContentHash(const std::vector<std::string>& paths, uint64_t max_bytes = UINT64_MAX);

StatusOr<std::vector<std::pair<std::string, std::string>>> DatasetFiles(const jobspec::DataSpec& data,
                                                                        const std::vector<std::string>& names);

struct DatasetHash {
  std::string name;
  std::string content_hash;  // "sha256:<hex>"
};
StatusOr<std::vector<DatasetHash>> FingerprintDatasets(const jobspec::DataSpec& data,
                                                       const std::vector<std::string>& names,
                                                       uint64_t max_bytes_each = UINT64_MAX);
std::string EvalSetFingerprint(std::vector<DatasetHash> datasets);

}  // namespace anneal::coordinator
