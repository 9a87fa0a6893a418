// Internal to anneal_transfer: confining a requested path to a ticket's root (transfer/server.h).
//
// ConfinePath(root, rel, allow_root) resolves <root>/<rel> (realpath: every symlink followed) and returns it when
// it lies inside the resolved root; otherwise:
//   PERMISSION_DENIED  rel is absolute, has "..", "." or empty parts, or resolves outside the root (a symlink out)
//   NOT_FOUND          the root or <root>/<rel> does not exist
//   INVALID_ARGUMENT   rel is empty and allow_root is false
// A single-file root (or a subpath naming a file) is read through its manifest entry, whose path is the file's
// name: <root>/<name> where <root> is a regular file named <name> resolves to <root> itself.
//
// Thread-safety: stateless. The check and the later open are not atomic: a symlink swapped in between by
// someone who can write inside the root is not caught (such a writer can already change what is served).
#pragma once

#include <string>

#include "common/status.h"

namespace anneal::transfer {

StatusOr<std::string> ConfinePath(const std::string& root, const std::string& rel, bool allow_root);

}  // namespace anneal::transfer
