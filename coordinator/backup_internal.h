// Socket helpers shared by the backup client (backup.cc) and server (backup_server.cc); not a public interface.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace anneal::coordinator::backup_internal {

// Writes all of `text` (MSG_NOSIGNAL: a vanished peer is an error, not SIGPIPE).
Status SendAll(int fd, std::string_view text);
// Reads one '\n'-terminated line (returned without it) within `timeout_ms`; longer than `limit` bytes is
// INVALID_ARGUMENT, a timeout DEADLINE_EXCEEDED, EOF first UNAVAILABLE; messages start with `what`.
StatusOr<std::string> ReadLine(int fd, int timeout_ms, size_t limit, const std::string& what);

}  // namespace anneal::coordinator::backup_internal
