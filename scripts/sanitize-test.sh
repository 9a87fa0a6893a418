#!/usr/bin/env bash
# The daemon tests under AddressSanitizer + UndefinedBehaviorSanitizer, then a brief run of every fuzz target
# (bench/fuzz/run.sh), from one clang build dir (build-sanitize/): every library is compiled with
# -fsanitize=address,undefined plus libFuzzer's coverage (-fsanitize=fuzzer-no-link), the tests link the
# sanitizers, the fuzz targets link libFuzzer too. The trainer is not built (its LibTorch is uninstrumented).
# A sanitizer report fails the test that triggered it (halt_on_error; UBSan does not recover).
#
#   scripts/sanitize-test.sh [--fuzz-runs N] [--fuzz-seconds N] [--no-fuzz] [--no-tests] [ctest args...]
#
# Default: the unit tests of agent, cli, common, coordinator, jobspec, protocol, storage and the agent and
# coordinator integration tests, then 2000 executions per fuzz target with a fixed seed (at most 60 s each). Non-zero on any failure, sanitizer report or crash.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FUZZ_SECONDS=60
FUZZ_RUNS=2000
RUN_FUZZ=1
RUN_TESTS=1
CTEST_ARGS=()
while (($#)); do
  case "$1" in
    --fuzz-seconds) FUZZ_SECONDS="$2"; shift ;;
    --fuzz-runs) FUZZ_RUNS="$2"; shift ;;
    --no-fuzz) RUN_FUZZ=0 ;;
    --no-tests) RUN_TESTS=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) CTEST_ARGS+=("$1") ;;
  esac
  shift
done

export ANNEAL_SANITIZE_BUILD_DIR="${ANNEAL_SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}"
BUILD_DIR="$ANNEAL_SANITIZE_BUILD_DIR"
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
command -v clang++ >/dev/null || { echo "sanitize-test.sh: clang++ not found (scripts/setup.sh installs it)" >&2; exit 1; }

start=$(date +%s)
mkdir -p "$BUILD_DIR"
# -O1: the sanitizers' usual level (fast enough for the tests and the fuzzers, exact stack traces).
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined" \
  -DANNEAL_SANITIZE=address,undefined -DANNEAL_BUILD_TRAINER=OFF -DANNEAL_FUZZ=ON \
  -DANNEAL_PYTHON="$ROOT/.venv/bin/python" \
  -DANNEAL_TEST_FILTER='unit/(agent|cli|common|coordinator|jobspec|protocol|storage|transfer)|integration/(agent|coordinator)' \
  >"$BUILD_DIR/configure.log" 2>&1 || { cat "$BUILD_DIR/configure.log"; echo "sanitize-test.sh: configure failed" >&2; exit 1; }
# Only the fuzz targets when the tests are not run (bench/fuzz/run.sh's build).
NINJA_TARGETS=()
[ "$RUN_TESTS" = 1 ] || NINJA_TARGETS=(anneal_fuzz_all)
ninja -C "$BUILD_DIR" -j "${ANNEAL_JOBS:-$(nproc)}" "${NINJA_TARGETS[@]}"
built=$(date +%s)
echo "sanitize-test.sh: build took $((built - start)) s"

status=0
rm -f "$BUILD_DIR/why-failed.txt"
if [ "$RUN_TESTS" = 1 ]; then
  # detect_leaks: LeakSanitizer on (the default on x86-64 Linux, spelled out); the tests' child processes
  # (real daemons) inherit these and fail their test when a sanitizer reports.
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1:strict_string_checks=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
  export OMP_NUM_THREADS=1
  # Left out here (it runs in scripts/test.sh): the test that exhausts the coordinator's file descriptors on
  # purpose. The sanitizer runtime itself needs descriptors (its symbolizer, /proc/self/maps for UBSan's vptr
  # check) and reports a false "invalid vptr" when it has none.
  (cd "$BUILD_DIR" && ctest --output-on-failure --timeout 600 -j "${ANNEAL_TEST_JOBS:-2}" \
    --output-junit Testing/junit.xml -E 'TransportHttp.TheAcceptLoopSurvivesRunningOutOfFileDescriptors' \
    "${CTEST_ARGS[@]}") || status=1
  tested=$(date +%s)
  echo "sanitize-test.sh: tests took $((tested - built)) s"
  # Why each test failed, printed again as the run's last lines (CI shows only the tail of a run).
  [ "$status" = 0 ] || python3 scripts/test_failures.py "$BUILD_DIR/Testing/junit.xml" >"$BUILD_DIR/why-failed.txt" || true
fi
if [ "$RUN_FUZZ" = 1 ]; then
  # Repeatable in CI: a fixed seed and a fixed number of executions per target (FUZZ_SECONDS only caps a slow
  # machine), from the seed corpora alone (what earlier local runs found is not read).
  rm -rf "$BUILD_DIR/fuzz"
  bash bench/fuzz/run.sh --no-build --seed 1 --runs "$FUZZ_RUNS" "$FUZZ_SECONDS" || status=1
fi
echo "sanitize-test.sh: total $(($(date +%s) - start)) s"
[ ! -s "$BUILD_DIR/why-failed.txt" ] || cat "$BUILD_DIR/why-failed.txt"
exit $status
