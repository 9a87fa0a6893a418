// Rank log files: size-based rotation and reads at logical offsets (for pb::FetchLogs and live tails).
//
// A rank writes its stdout and stderr straight into rank-<r>.log (O_APPEND, no pipe through the agent, so the
// rank keeps logging while the agent restarts). Rotation is copy-then-truncate: rank-<r>.log is copied to
// rank-<r>.log.1 and truncated, and the bytes rotated out are added to rank-<r>.log.base. Offsets handed to
// the coordinator are logical (bytes since the rank started), so a tail keeps going across rotations:
//   rank-<r>.log.1 holds [base - size(.1), base), rank-<r>.log holds [base, base + size).
// Bytes written between the copy and the truncate may be lost (the same trade-off as logrotate's
// copytruncate); older data than rank-<r>.log.1 is gone and a read below it starts at the oldest byte kept.
//
// Thread-safety: stateless functions; rotation must be done by one thread (the agent's loop).
//
// Example:
//   RETURN_IF_ERROR(RotateLogIfLarger(dir + "/rank-0.log", 64 << 20));
//   ASSIGN_OR_RETURN(LogSlice s, ReadLog(dir + "/rank-0.log", offset, 65536));
//   // s.offset is where s.data starts (>= offset unless rotated away); next offset = s.offset + s.data.size()
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace anneal::agent {

Status RotateLogIfLarger(const std::string& log_path, uint64_t max_bytes);

struct LogSlice {
  uint64_t offset = 0;  // logical offset of data[0]
  std::string data;
  uint64_t end = 0;     // logical size of the log right now
};
// NOT_FOUND when the log does not exist.
StatusOr<LogSlice> ReadLog(const std::string& log_path, uint64_t offset, uint32_t max_bytes);

}  // namespace anneal::agent
