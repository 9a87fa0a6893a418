// The build's version string (git describe at configure time), printed by every binary's --version.
#pragma once

namespace anneal {

// e.g. "0.1.0-12-gabc1234" or "0.1.0-unknown" outside a git checkout.
const char* Version();

}  // namespace anneal
