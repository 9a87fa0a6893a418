#!/usr/bin/env bash
# Builds (scripts/build.sh) and runs every test through ctest; prints ctest's summary; non-zero on any failure.
#
#   scripts/test.sh [-R regex] [-L label] [--asan|--ubsan|--debug]   (other arguments go to ctest)
#
# Tests labelled `long` (every parallel layout; minutes each) are left out: scripts/test-long.sh runs them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD_ARGS=()
CTEST_ARGS=()
BUILD_DIR=build
for arg in "$@"; do
  case "$arg" in
    --asan) BUILD_ARGS+=("$arg"); BUILD_DIR=build-asan ;;
    --ubsan) BUILD_ARGS+=("$arg"); BUILD_DIR=build-ubsan ;;
    --debug|--release) BUILD_ARGS+=("$arg") ;;
    *) CTEST_ARGS+=("$arg") ;;
  esac
done

bash scripts/build.sh "${BUILD_ARGS[@]}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
cd "$BUILD_DIR"
LONG_ARGS=(-LE long)
[[ "${ANNEAL_TEST_LONG:-0}" == 1 ]] && LONG_ARGS=(-L long)
# On failure the reasons are printed last (scripts/test_failures.py reads ctest's JUnit report): CI shows only
# the tail of the run.
rc=0
ctest --output-on-failure --timeout 600 -j "${ANNEAL_TEST_JOBS:-2}" --output-junit Testing/junit.xml \
  "${LONG_ARGS[@]}" "${CTEST_ARGS[@]}" || rc=$?
if [ "$rc" != 0 ]; then
  python3 "$ROOT/scripts/test_failures.py" Testing/junit.xml || true
fi
exit "$rc"
