// Deleting checkpoint files on the coordinator's request (retention), confined to the job's output directory.
//
// A path is deleted only when, after resolving every symlink, it lies strictly inside the (resolved) output
// directory; a path with a ".." component, a relative path, the output directory itself, or a symlink that
// escapes it is refused with PERMISSION_DENIED naming both paths. A path that no longer exists is success
// (deletion is idempotent: the coordinator may resend). Symlinks inside the checkpoint are removed as links,
// never followed.
//
// Thread-safety: stateless.
//
// Example:
//   Status st = DeleteCheckpointDir("/out/job1/checkpoint-100", "/out/job1");
#pragma once

#include <string>

#include "common/status.h"

namespace anneal::agent {

// Checks the rules above without deleting; returns the resolved path to delete.
StatusOr<std::string> ResolveDeletablePath(const std::string& path, const std::string& output_dir);
// The same rules for writing there (a checkpoint copy, agent/stager.h); `verb` names the act in the refusal.
StatusOr<std::string> ResolvePathInsideOutputDir(const std::string& path, const std::string& output_dir,
                                                 const std::string& verb);
Status DeleteCheckpointDir(const std::string& path, const std::string& output_dir);

}  // namespace anneal::agent
