#!/usr/bin/env bash
# The long tests scripts/test.sh leaves out (ctest label `long`): every parallel layout against the
# single-process run (tests/parity/parallel), about 7 minutes on 2 cores. Run before changing the trainer's
# parallelism; CI runs their covering short twins.
#
#   scripts/test-long.sh [-R regex] [--debug]   (other arguments go to ctest)
set -euo pipefail
ANNEAL_TEST_LONG=1 exec bash "$(dirname "${BASH_SOURCE[0]}")/test.sh" "$@"
