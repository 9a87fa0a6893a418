#!/usr/bin/env python3
"""Data-parallel scaling on CPU: training tokens/s with world 1, 2 and 4 (anneal-train launch, Gloo), the same
global batch, model and data. On a machine with fewer cores than ranks the table measures core sharing as much
as communication; run it where each rank has its own cores.

    .venv/bin/python bench/parallel/scaling.py [--preset small] [--steps 10] [--global-batch 16]
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
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--worlds", default="1,2,4")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, f"{ROOT}/scripts/make_tokenizer.py", "--out", f"{tmp}/tok"], check=True,
                       capture_output=True)
        subprocess.run([args.bin, "model", "init", "--arch", "llama", "--preset", args.preset, "--tokenizer",
                        f"{tmp}/tok", "--out", f"{tmp}/m"], check=True, capture_output=True)
        for world in map(int, args.worlds.split(",")):
            out = f"{tmp}/out{world}"
            cfg = f"{tmp}/job{world}.yaml"
            with open(cfg, "w") as f:
                f.write(f"model_name_or_path: {tmp}/m\nfinetuning_type: lora\nlora_target: all\ndataset: demo_train\n"
                        f"dataset_dir: {ROOT}/examples/data\ntemplate: qwen\ncutoff_len: 128\noutput_dir: {out}\n"
                        f"per_device_train_batch_size: {args.global_batch // world}\nmax_steps: {args.steps + 2}\n"
                        f"logging_steps: 1\nsave_steps: 0\ntokenized_cache_dir: {tmp}/cache\n")
            subprocess.run([args.bin, "launch", "--nproc-per-node", str(world), "--", "train", "--config", cfg],
                           check=True, capture_output=True)
            log = [json.loads(l) for l in open(f"{out}/trainer_log.jsonl")]
            t = lambda e: e["total_tokens"] / e["throughput"]
            tok_s = (log[-1]["total_tokens"] - log[1]["total_tokens"]) / (t(log[-1]) - t(log[1]))
            rows.append((world, tok_s, log[-1]["loss"]))
    base = rows[0][1]
    print(f"\nData-parallel scaling on CPU ({os.cpu_count()} cores): llama/{args.preset} LoRA, global batch "
          f"{args.global_batch} x <=128 tokens, {args.steps} measured steps")
    print(f"| world | tokens/s | speed-up vs world 1 | final loss |")
    print(f"|------:|---------:|--------------------:|-----------:|")
    for world, tok_s, loss in rows:
        print(f"| {world:>5} | {tok_s:>8.0f} | {tok_s / base:>19.2f} | {loss:>10.5f} |")


if __name__ == "__main__":
    main()
