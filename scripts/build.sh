#!/usr/bin/env bash
# Configures and builds everything into build/ (Ninja). Runs scripts/setup.sh first (idempotent, seconds when
# everything is installed).
#
#   scripts/build.sh [--release|--debug|--asan|--ubsan] [--no-setup] [ninja targets...]
#
# Release is the default. --asan / --ubsan build Debug with the sanitizer into build-asan/ / build-ubsan/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD_TYPE=Release
BUILD_DIR="${ANNEAL_BUILD_DIR:-build}"
SANITIZE=""
RUN_SETUP=1
TARGETS=()
for arg in "$@"; do
  case "$arg" in
    --release) BUILD_TYPE=Release ;;
    --debug) BUILD_TYPE=Debug ;;
    --asan) BUILD_TYPE=Debug; SANITIZE=address; BUILD_DIR=build-asan ;;
    --ubsan) BUILD_TYPE=Debug; SANITIZE=undefined; BUILD_DIR=build-ubsan ;;
    --no-setup) RUN_SETUP=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) TARGETS+=("$arg") ;;
  esac
done

if [ "$RUN_SETUP" = 1 ]; then bash scripts/setup.sh; fi

# ccache keys on relative paths, so clones in other directories share the cache.
export CCACHE_BASEDIR="$ROOT"
export CCACHE_NOHASHDIR=1
# The trainer compiles with a precompiled header: without these, ccache refuses every trainer file.
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"

mkdir -p "$BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DANNEAL_SANITIZE="$SANITIZE" \
  -DANNEAL_PYTHON="$ROOT/.venv/bin/python" >"$BUILD_DIR/configure.log" 2>&1 || {
  cat "$BUILD_DIR/configure.log"; echo "build.sh: cmake configure failed" >&2; exit 1; }
grep -E "anneal-train" "$BUILD_DIR/configure.log" || true
JOBS="${ANNEAL_JOBS:-$(nproc)}"
ninja -C "$BUILD_DIR" -j "$JOBS" "${TARGETS[@]}"
