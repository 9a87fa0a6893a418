// Small filesystem helpers with Status errors: whole-file reads, durable atomic writes, directory fsync.
//
// WriteFileAtomic writes `<path>.tmp-<pid>`, fsyncs it, renames it over `path` and fsyncs the directory, so a
// crash leaves either the old or the new file, never a torn one.
//
// Thread-safety: stateless; concurrent writers of the same path race on the rename (last one wins).
//
// Example:
//   RETURN_IF_ERROR(anneal::WriteFileAtomic(dir + "/manifest.json", text));
//   ASSIGN_OR_RETURN(std::string text, anneal::ReadFile(dir + "/manifest.json"));
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace anneal {

StatusOr<std::string> ReadFile(const std::string& path);
// `mode` applies to the new file (0600 for a credential: it is never readable by others, not even briefly).
Status WriteFileAtomic(const std::string& path, std::string_view data, unsigned mode = 0644);
// Creates `path` (O_EXCL: ALREADY_EXISTS when it exists) with `mode`, writes, fsyncs it and its directory.
Status WriteNewFile(const std::string& path, std::string_view data, unsigned mode);
// fsync of a file or directory by path.
Status FsyncPath(const std::string& path);
// mkdir -p.
Status MakeDirs(const std::string& path);
// errno as text, for messages.
std::string ErrnoText(int err);

}  // namespace anneal
