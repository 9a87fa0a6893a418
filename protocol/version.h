// The wire protocol version. Bump it for any change an older peer cannot read (protocol/anneal.proto).
#pragma once

#include <cstdint>

namespace anneal::protocol {
inline constexpr uint32_t kProtocolVersion = 1;
}  // namespace anneal::protocol
