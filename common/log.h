// One log format and one level flag for every Anneal binary (spdlog).
//
// Format: "2026-11-24T02:30:00.123 info  [anneal-agent] message". Level names: trace, debug, info, warn,
// error, critical, off. Daemons log to stderr (the agent's children have their own per-rank files).
//
// Thread-safety: InitLogging must be called once at start-up, before other threads log; logging itself is
// thread-safe (spdlog's default sink is mutex-protected).
//
// Example:
//   if (auto st = anneal::InitLogging("anneal-coordinator", level_flag); !st.ok()) { ... }
//   spdlog::info("listening on {}", addr);
#pragma once

#include <string_view>

#include "common/status.h"

namespace anneal {

// Fails with INVALID_ARGUMENT naming the allowed levels when `level` is unknown.
Status InitLogging(std::string_view program, std::string_view level);

}  // namespace anneal
