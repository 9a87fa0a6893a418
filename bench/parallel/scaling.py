#!/usr/bin/env python3
"""Parallel scaling on CPU: training tokens/s for layouts (tp, pp, dp) over world 1, 2 and 4 (anneal-train
launch, Gloo), the same global batch, model and data; the final loss column shows every layout computes the same
run. On a machine with fewer cores than ranks the table measures core sharing as much as communication; run it
where each rank has its own cores.

    .venv/bin/python bench/parallel/scaling.py [--preset tiny] [--layers 4] [--steps 10] [--global-batch 16]
        [--layouts 1x1x1,1x1x2,2x1x1,1x2x1,1x1x4,2x1x2,2x2x1,1x4x1]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/bin/anneal-train"))
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--layouts", default="1x1x1,1x1x2,2x1x1,1x2x1,1x1x4,2x1x2,2x2x1,1x4x1",
                    help="tp x pp x dp, comma-separated")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, f"{ROOT}/scripts/make_tokenizer.py", "--out", f"{tmp}/tok"], check=True,
                       capture_output=True)
        subprocess.run([args.bin, "model", "init", "--arch", "llama", "--preset", args.preset, "--tokenizer",
                        f"{tmp}/tok", "--out", f"{tmp}/m", "--layers", str(args.layers)], check=True, capture_output=True)
        for layout in args.layouts.split(","):
            tp, pp, dp = map(int, layout.split("x"))
            world = tp * pp * dp
            out = f"{tmp}/out-{layout}"
            cfg = f"{tmp}/job-{layout}.yaml"
            with open(cfg, "w") as f:
                f.write(f"model_name_or_path: {tmp}/m\nfinetuning_type: lora\nlora_target: all\ndataset: demo_train\n"
                        f"dataset_dir: {ROOT}/examples/data\ntemplate: qwen\ncutoff_len: 128\noutput_dir: {out}\n"
                        f"max_steps: {args.steps + 2}\n"
                        f"logging_steps: 1\nsave_steps: 0\ntokenized_cache_dir: {tmp}/cache\n"
                        f"tensor_model_parallel_size: {tp}\npipeline_model_parallel_size: {pp}\n"
                        f"gradient_accumulation_steps: 2\n"
                        f"per_device_train_batch_size: {args.global_batch // dp // 2}\n"
                        f"gpus_per_node: {world}\n")
            subprocess.run([args.bin, "launch", "--nproc-per-node", str(world), "--", "train", "--config", cfg],
                           check=True, capture_output=True)
            log = [json.loads(l) for l in open(f"{out}/trainer_log.jsonl")]
            t = lambda e: e["total_tokens"] / e["throughput"]
            tok_s = (log[-1]["total_tokens"] - log[1]["total_tokens"]) / (t(log[-1]) - t(log[1]))
            rows.append((tp, pp, dp, tok_s, log[-1]["loss"]))
    base = rows[0][3]
    print(f"\nParallel scaling on CPU ({os.cpu_count()} cores): llama/{args.preset} ({args.layers} layers) LoRA, "
          f"global batch {args.global_batch} x <=128 tokens, {args.steps} measured steps, 2 micro-batches per step")
    print("| tp | pp | dp | world | tokens/s | vs first row | final loss |")
    print("|---:|---:|---:|------:|---------:|-------------:|-----------:|")
    for tp, pp, dp, tok_s, loss in rows:
        print(f"| {tp} | {pp} | {dp} | {tp * pp * dp:>5} | {tok_s:>8.0f} | {tok_s / base:>12.2f} | {loss:>10.5f} |")


if __name__ == "__main__":
    main()
