// Durable directory moves for committed artifacts (checkpoints, exports): a directory is replaced without a
// moment where neither version exists, and deleted so that no reader ever finds it half-deleted.
//
// ReplaceDirectory(staged, target): with no `target` a rename; with one, the two are exchanged atomically
// (renameat2 RENAME_EXCHANGE) and the old content, now at `staged`, removed. Where the filesystem cannot
// exchange (EINVAL/ENOSYS, e.g. some network filesystems), the old directory is first renamed aside to
// `.replaced-<name>`, the new one renamed in, then the old removed: a crash between the two renames leaves the
// old version under `.replaced-<name>`, never nothing.
//
// DeleteDirectoryMarked(dir): renames `dir` to `<parent>/.deleting-<name>` (the on-disk DELETING mark; the
// rename is atomic, so listings see the whole directory or nothing), fsyncs the parent, then removes the
// marked tree. A `dir` that is already gone is success (a second deleter, a retried order); a leftover mark
// from a crash is removed too.
//
// Thread-safety: stateless; two processes deleting the same directory both succeed.
//
// Example:
//   RETURN_IF_ERROR(anneal::ReplaceDirectory(out + "/.tmp-checkpoint-40", out + "/checkpoint-40"));
//   RETURN_IF_ERROR(anneal::DeleteDirectoryMarked(out + "/checkpoint-20"));
#pragma once

#include <string>

#include "common/status.h"

namespace anneal {

Status ReplaceDirectory(const std::string& staged, const std::string& target);
Status DeleteDirectoryMarked(const std::string& dir);
// <parent>/.deleting-<name>: where DeleteDirectoryMarked moves `dir` before removing it.
std::string DeletingMarkPath(const std::string& dir);
// Removes every `.deleting-*` and `.replaced-*` leftover directly under `parent` (a crash during a delete or
// a replace); restores a `.replaced-<name>` whose `<name>` is missing instead of removing it.
Status CleanDirectoryLeftovers(const std::string& parent);

}  // namespace anneal
