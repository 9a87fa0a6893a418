#!/usr/bin/env bash
# The long chaos soak of issue 19 (tests/fault/soak.py, docs/reliability.md "Soak"): 3 agent hosts and a
# coordinator host as network namespaces, a stream of LoRA jobs, N random faults (default 100). Needs root and a
# build with the daemons; the trainer is build/bin/anneal-train or $ANNEAL_TRAINER. Not part of the default test
# run (fault.soak_short is its few-fault variant).
#
#   scripts/soak.sh [FAULTS [SEED [BUILD_DIR]]]        e.g. scripts/soak.sh 20 7
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
faults="${1:-100}"
seed="${2:-1}"
build="${3:-$root/build}"
python="$root/.venv/bin/python"
[ -x "$python" ] || python=python3
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$python" "$root/tests/fault/soak.py" --bindir "$build/bin" --faults "$faults" --seed "$seed" --steps 30
