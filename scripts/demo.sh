#!/usr/bin/env bash
# The main job: a local Anneal cluster and an example fine-tune, end to end, on CPU.
#
#   1. set up and build (scripts/build.sh; the first run installs every dependency)
#   2. generate a small tokenizer and a random Qwen2-shaped model (no downloads)
#   3. `anneal up`: a coordinator and 2 agents x 2 CPU slots (state under out/demo/)
#   4. submit a LoRA SFT job over 4 ranks (2 nodes x 2: tensor parallel 2 x data parallel 2) and follow it to the end
#   5. list its checkpoints, then run an eval job (loss, perplexity, sample generations) on the adapter
#   6. print where everything is, and stop the cluster (--keep leaves it running)
#   7. check that no attempt of either job failed (exit 1 naming each failed attempt and its reason otherwise)
#
#   scripts/demo.sh [--keep] [--steps N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KEEP=0
STEPS=240
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --steps) STEPS="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "build (scripts/build.sh)"
bash scripts/build.sh
BIN="$ROOT/build/bin"
[ -x "$BIN/anneal-train" ] || { echo "demo.sh: anneal-train was not built (no LibTorch?)" >&2; exit 1; }

DEMO="$ROOT/out/demo"
export ANNEAL_HOME="$DEMO/home"
"$BIN/anneal" down >/dev/null 2>&1 || true
rm -rf "$DEMO"
mkdir -p "$DEMO"

say "generate a tokenizer and a random model (qwen2, preset small)"
.venv/bin/python scripts/make_tokenizer.py --out "$DEMO/tokenizer"
"$BIN/anneal" model init --arch qwen2 --preset small --tokenizer "$DEMO/tokenizer" --out "$DEMO/base-model" --seed 1

say "start a local cluster: 2 agents x 2 CPU slots"
# As root, the agents run the ranks as `nobody`: the trainer, LibTorch and the demo's files must be reachable.
bash scripts/rank-access.sh "$BIN" "$ROOT/.venv" "$DEMO"
"$BIN/anneal" up --agents 2 --slots 2
cleanup() { if [ "$KEEP" = 0 ]; then "$BIN/anneal" down >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
"$BIN/anneal" nodes

say "submit the LoRA SFT job (4 ranks: 2 nodes x 2 slots, tensor parallel 2 x data parallel 2) and follow it"
# Paths in the example are relative to the repository root (this directory); anneal submit resolves them.
JOB=$("$BIN/anneal" submit examples/demo_lora_sft.yaml --set max_steps="$STEPS")
echo "job id: $JOB"
"$BIN/anneal" watch "$JOB" || { echo "demo.sh: FAILED: the training job $JOB did not succeed (anneal show $JOB)" >&2; exit 1; }

say "checkpoints of $JOB (committed, with checksums)"
"$BIN/anneal" checkpoints "$JOB"

say "evaluate the adapter (loss, perplexity, sample generations)"
EVAL=$("$BIN/anneal" submit examples/demo_eval.yaml)
"$BIN/anneal" watch "$EVAL" || { echo "demo.sh: FAILED: the eval job $EVAL did not succeed (anneal show $EVAL)" >&2; exit 1; }

say "where everything is"
cat <<TXT
  base model      $DEMO/base-model
  training job    $JOB  (anneal show $JOB; anneal logs $JOB --rank 0)
  loss curve      $DEMO/lora-sft/trainer_log.jsonl
  PEFT adapter    $DEMO/lora-sft/adapter_model.safetensors (+ adapter_config.json; loads in peft unchanged)
  checkpoints     $DEMO/lora-sft/checkpoint-*/
  eval results    $DEMO/eval/eval_results.json
  cluster state   $ANNEAL_HOME (coordinator RocksDB, agent work dirs, daemon logs)
TXT
.venv/bin/python - "$DEMO/lora-sft/trainer_log.jsonl" "$DEMO/eval/eval_results.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(f"  loss            {rows[0]['loss']:.3f} at step {rows[0]['current_steps']} -> {rows[-1]['loss']:.3f} at step {rows[-1]['current_steps']}")
r = json.load(open(sys.argv[2]))
print(f"  eval            loss {r['loss']['eval_loss']:.3f}, perplexity {r['loss']['perplexity']:.1f}")
for s in r.get("generate", [])[:2]:
    print(f"  sample          {s['prompt'][-60:]!r} -> {s['output'][:60]!r}")
PY

say "check: no attempt of the demo's jobs failed"
# The demo is a test of the product: a job that succeeded only after a failed attempt (a crash, a lost node,
# a retried rank) fails the demo, with the reason of every failed attempt.
for id in "$JOB" "$EVAL"; do "$BIN/anneal" --json show "$id" >"$DEMO/show-$id.json"; done
.venv/bin/python - "$DEMO/show-$JOB.json" "$DEMO/show-$EVAL.json" <<'PY'
import json, sys
failed = 0
for path in sys.argv[1:]:
    shown = json.load(open(path))
    job = shown["job"]
    for f in shown["failed_attempts"]:
        failed += 1
        print(f"  {job['job_id']}: attempt {f['attempt']} failed: {f['reason']}", file=sys.stderr)
    if not shown["failed_attempts"]:
        print(f"  {job['job_id']}: {job['state'].removeprefix('JOB_')} in attempt {job['attempt']}, none failed")
if failed:
    sys.exit(f"demo.sh: FAILED: {failed} attempt(s) of the demo's jobs failed (reasons above; anneal show JOB)")
print("  no attempt of the demo's jobs failed")
PY
if [ "$KEEP" = 1 ]; then echo "  the cluster is still up (ANNEAL_HOME=$ANNEAL_HOME); stop it with: ANNEAL_HOME=$ANNEAL_HOME $BIN/anneal down"; fi
