#!/usr/bin/env bash
# What only a GPU machine can show, in one call of the `run` tool (carry: [".device"]):
#   1. build anneal-train there and run trainer_test (scripts/device-build.sh: CUDA kernel vs its reference);
#   2. the CUDA training path end to end at world 1 (bf16, LoRA and full), and model / training throughput and
#      memory against HF transformers + peft on the same GPU (bench/model, bench/train);
#   3. with 2 or more GPUs, the NCCL paths: the parallel layout parity tests on CUDA (tensor and pipeline send/recv,
#      the overlapped data-parallel all-reduce, ZeRO-1) for every layout that fits the GPU count.
# Tables go to $OUT; copy them into docs/benchmarks.md.
#   here:        scripts/device-build.sh --prepare
#   GPU machine: scripts/device-bench.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/anneal-device}"
mkdir -p "$OUT"
bash scripts/device-build.sh
BIN="$ROOT/build-device/bin/anneal-train"
GPUS="$(nvidia-smi --list-gpus | wc -l)"
echo "GPUs: $GPUS" | tee "$OUT/summary.txt"
ninja -C build-device -j 16 bench_model_fwd_bwd 2>&1 | tail -1
python3 bench/model/run.py --bin build-device/bin/bench_model_fwd_bwd --init-bin "$BIN" --device cuda --preset 1b \
  --dtype bfloat16 --batch 1 --seq 2048 2>&1 | tee "$OUT/bench_model.txt" | tail -15
python3 bench/train/run.py --bin "$BIN" --device cuda --dtype bfloat16 --preset 1b --batch 1 --seq 2048 \
  2>&1 | tee "$OUT/bench_train.txt" | tail -15
if [ "$GPUS" -ge 2 ]; then
  for c in dp layouts_lora layouts_full reshard; do
    ANNEAL_PARITY_DEVICE=cuda python3 tests/parity/parallel/parallel_parity.py --bin "$BIN" --case "$c" \
      2>&1 | tee -a "$OUT/parallel_cuda.txt" | tail -12 || echo "parallel parity $c failed on CUDA" | tee -a "$OUT/summary.txt"
  done
else
  echo "one GPU: the multi-rank NCCL paths need 2 or more (NCCL refuses two ranks on one device)" | tee -a "$OUT/summary.txt"
fi
