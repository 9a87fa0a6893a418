// A free TCP port on the loopback interface: bind port 0, read what the kernel chose, close. The port is free
// at that moment only (another process may take it before the caller binds it), which is what rendezvous
// defaults, local clusters and tests need.
//
// Thread-safety: stateless.
//
// Example:
//   ASSIGN_OR_RETURN(int port, anneal::FreeLoopbackPort());
#pragma once

#include "common/status.h"

namespace anneal {

// INTERNAL naming the failing call when no socket can be bound.
StatusOr<int> FreeLoopbackPort();

}  // namespace anneal
