// Key encoding of the state store: string ids and big-endian numbers, so keys sort the way they should.
//
// Composite keys are "<id>\0<be64 number>": every key of one job shares the prefix "<id>\0", so a prefix scan
// returns one job's events, metrics or checkpoints in numeric order. Ids never contain '\0' (checked).
//
// Thread-safety: pure functions.
//
// Example:
//   std::string k = anneal::storage::JobStepKey("job-000001", 42);   // "job-000001\0" + 8 bytes of 42
//   uint64_t step = anneal::storage::DecodeJobStepKey(k)->second;     // 42
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace anneal::storage {

// 8 bytes, most significant first.
void AppendBigEndian64(std::string* out, uint64_t value);
std::optional<uint64_t> ReadBigEndian64(std::string_view bytes);

// "<id>\0": the prefix of every (id, number) key of one id.
std::string IdPrefix(std::string_view id);
// "<id>\0<be64 number>": events (job, seq), metrics (job, step), checkpoints (job, step).
std::string JobStepKey(std::string_view id, uint64_t number);
// Splits a JobStepKey; nullopt when the key is not one.
std::optional<std::pair<std::string, uint64_t>> DecodeJobStepKey(std::string_view key);

}  // namespace anneal::storage
