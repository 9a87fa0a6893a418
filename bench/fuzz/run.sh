#!/usr/bin/env bash
# Runs every libFuzzer target (or the named ones) for SECONDS each, one after the other, and prints a table:
# target, executions, exec/s, corpus size (inputs in the fuzzer's corpus at the end), crashes (with the path
# of every crash, leak, timeout or out-of-memory input kept). Non-zero when any target found one.
#
#   bench/fuzz/run.sh [--no-build] [--runs N] [--seed S] SECONDS [TARGET...]
#
# --seed S fixes libFuzzer's random seed: with --runs N (and SECONDS as a generous cap) a run is repeatable,
# which is how CI runs it (scripts/sanitize-test.sh), so a red CI is a finding anyone can reproduce.
#
# Builds first (scripts/sanitize-test.sh --no-tests --no-fuzz: the clang build dir build-sanitize/, or
# $ANNEAL_SANITIZE_BUILD_DIR) unless --no-build. --runs N stops a target after N executions (or SECONDS,
# whichever comes first). Each target starts from its seed corpus (bench/fuzz/corpus/<target>, read-only) plus
# what earlier runs found (<build dir>/fuzz/<target>/corpus, kept between runs); crash inputs go to
# <build dir>/fuzz/<target>/artifacts/. Reproduce one: <build dir>/bin/fuzz_<target> <crash file>.
# Scratch files of the targets live under a per-run TMPDIR (in /dev/shm when present), removed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# Every target with its maximum input length (bytes).
TARGETS_AND_MAX_LEN=(
  "frame 4096"
  "coordinator 16384"
  "agent 8192"
  "jobspec 8192"
  "trainer_events 8192"
  "spool 8192"
  "tokenizer 65536"
  "safetensors_header 4096"
  "http 8192"
  "transfer_request 4096"
)

BUILD=1
RUNS=-1
SEED=0
SECONDS_EACH=""
SELECTED=()
while (($#)); do
  case "$1" in
    --no-build) BUILD=0 ;;
    --runs) RUNS="$2"; shift ;;
    --seed) SEED="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) if [ -z "$SECONDS_EACH" ]; then SECONDS_EACH="$1"; else SELECTED+=("$1"); fi ;;
  esac
  shift
done
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || { echo "usage: bench/fuzz/run.sh [--no-build] [--runs N] [--seed S] SECONDS [TARGET...]" >&2; exit 2; }

BUILD_DIR="${ANNEAL_SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}"
if [ "$BUILD" = 1 ]; then
  ANNEAL_SANITIZE_BUILD_DIR="$BUILD_DIR" bash scripts/sanitize-test.sh --no-tests --no-fuzz
fi

SHM=/dev/shm; [ -d "$SHM" ] && [ -w "$SHM" ] || SHM=/tmp
SCRATCH="$(mktemp -d "$SHM/anneal-fuzz-run-XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

rows=()
found=0
for entry in "${TARGETS_AND_MAX_LEN[@]}"; do
  read -r name max_len <<<"$entry"
  if ((${#SELECTED[@]})) && [[ ! " ${SELECTED[*]} " == *" $name "* ]]; then continue; fi
  bin="$BUILD_DIR/bin/fuzz_$name"
  [ -x "$bin" ] || { echo "run.sh: $bin not built" >&2; exit 1; }
  work="$BUILD_DIR/fuzz/$name"
  mkdir -p "$work/corpus" "$work/artifacts" "$SCRATCH/$name"
  log="$work/last-run.log"
  echo "run.sh: fuzz_$name for ${SECONDS_EACH}s (log: $log)"
  rc=0
  TMPDIR="$SCRATCH/$name" ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}" \
    "$bin" -max_total_time="$SECONDS_EACH" -runs="$RUNS" -seed="$SEED" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$ROOT/bench/fuzz/corpus/$name" \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  crash_files=$(grep -oE "Test unit written to [^ ]+" "$log" | sed 's/Test unit written to //' || true)
  crashes=$(printf '%s' "$crash_files" | grep -c . || true)
  if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then crashes=1; crash_files="(exit $rc, see $log)"; fi
  if [ "$crashes" != 0 ]; then
    found=1
    echo "run.sh: fuzz_$name FAILED:"
    grep -E "ERROR: |fuzz invariant violated|SUMMARY: |runtime error" "$log" | head -5 | sed 's/^/  /'
    printf '%s\n' "$crash_files" | sed 's/^/  crash input: /'
  fi
  rows+=("$(printf '%-20s %12s %9s %8s %8s' "$name" "${execs:-?}" "${rate:-?}" "${corpus:-?}" "$crashes")")
done

echo
printf '%-20s %12s %9s %8s %8s\n' target executions exec/s corpus crashes
for row in "${rows[@]}"; do echo "$row"; done
exit $found
